import { readFileSync } from 'node:fs';
import { PEM_PATTERN } from './discovery.settings.js';

/** A TLS setting's PEM: the text itself, or the file it names (checked by the settings factory). */
export function readPem(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  return PEM_PATTERN.test(value) ? value : readFileSync(value, 'utf8');
}
