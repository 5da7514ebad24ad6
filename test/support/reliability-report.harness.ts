import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** `.tmp/reliability/` at the repository root (git-ignored scratch space). */
export const RELIABILITY_RESULTS_DIR = fileURLToPath(
  new URL('../../.tmp/reliability/', import.meta.url),
);

/**
 * Writes `.tmp/reliability/<name>.json` and prints `[reliability] <name>: <summary>` on stdout
 * (process.stdout, not console: Jest does not buffer or decorate it).
 */
export function reportReliability(name: string, summary: string, figures: unknown): void {
  mkdirSync(RELIABILITY_RESULTS_DIR, { recursive: true });
  const file = `${RELIABILITY_RESULTS_DIR}${name}.json`;
  writeFileSync(
    file,
    `${JSON.stringify({ name, summary, at: new Date().toISOString(), figures }, null, 2)}\n`,
  );
  process.stdout.write(`\n[reliability] ${name}: ${summary}\n`);
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : Math.round((sorted[mid - 1] + sorted[mid]) / 2);
}

export function max(values: readonly number[]): number {
  return values.length === 0 ? NaN : Math.max(...values);
}
