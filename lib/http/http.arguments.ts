import { DiscoverySettingsError } from '../errors/discovery-settings.error.js';

const SUBJECT = 'DiscoveryHttpClient arguments';

function invalid(path: string, reason: string): DiscoverySettingsError {
  return new DiscoverySettingsError([{ path, reasons: [`${path} ${reason}`] }], SUBJECT);
}

const HTTP_SCHEME = /^https?:/i;

/** An absolute http(s) URL (string or URL); checked before any I/O. */
export function checkRequestUrl(input: unknown): void {
  // Every call comes here: a well-formed http(s) string is checked without building a URL.
  if (typeof input === 'string' && HTTP_SCHEME.test(input) && URL.canParse(input)) return;
  if (!(typeof input === 'string' || input instanceof URL)) {
    throw invalid('url', 'must be a string or a URL');
  }
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw invalid('url', 'must be an absolute URL like http://orders/api');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw invalid('url', 'must use http: or https:');
  }
}

/** The options fetch's init may carry for the discovery client. */
export function checkCallOptions<T extends object>(
  init: T & { deadlineMs?: unknown; idempotent?: unknown; shardKey?: unknown },
): T & { deadlineMs?: number; idempotent?: boolean; shardKey?: string } {
  if (typeof init !== 'object' || init === null) throw invalid('init', 'must be an object');
  const { deadlineMs, idempotent, shardKey } = init;
  if (
    deadlineMs !== undefined &&
    !(
      Number.isInteger(deadlineMs) &&
      (deadlineMs as number) > 0 &&
      (deadlineMs as number) <= 3_600_000
    )
  ) {
    throw invalid('deadlineMs', 'must be an integer from 1 to 3600000');
  }
  if (idempotent !== undefined && typeof idempotent !== 'boolean') {
    throw invalid('idempotent', 'must be a boolean');
  }
  if (shardKey !== undefined && typeof shardKey !== 'string') {
    throw invalid('shardKey', 'must be a string');
  }
  return init as T & { deadlineMs?: number; idempotent?: boolean; shardKey?: string };
}
