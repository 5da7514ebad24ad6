import { isIP } from 'node:net';

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** Why an attempt failed, as far as retrying is concerned. */
export type AttemptFailure =
  /** The request provably never left: refused, connect timeout, unreachable, DNS, TLS handshake. */
  | 'not-sent'
  /** Reset, socket closed, attempt timeout: it may have reached the instance. */
  | 'maybe-sent'
  /** The instance answered a status in `http.retry.statuses`. */
  | 'status';

/** Errors that prove the request never left: it never had a connection to go out on. */
const NOT_SENT = new Set([
  'ECONNREFUSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'EADDRNOTAVAIL',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
const MAYBE_SENT = new Set([
  'ECONNRESET',
  'EPIPE',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'ETIMEDOUT',
]);

/**
 * Why an attempt's transport failed, for the retry and ejection rules; `undefined` = not the
 * instance's failure (a bad argument, a destroyed client). `connected`: undici handed the request
 * to a connection (`onConnect`, just before writing it), so without it a socket, DNS or TLS error
 * (a failed handshake, a refused certificate) means the request never left.
 */
export function transportFailure(error: unknown, connected: boolean): AttemptFailure | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return undefined;
  if (NOT_SENT.has(code)) return 'not-sent';
  if (!connected && (MAYBE_SENT.has(code) || !code.startsWith('UND_ERR_'))) return 'not-sent';
  return MAYBE_SENT.has(code) ? 'maybe-sent' : undefined;
}

/**
 * Whether a failed attempt may be tried again on another instance: idempotent methods on any of
 * the failures; POST/PATCH only when the request never left, unless the caller declared it
 * idempotent.
 */
export function mayRetry(method: string, failure: AttemptFailure, idempotent?: boolean): boolean {
  if (failure === 'not-sent') return true;
  if (idempotent === true || IDEMPOTENT.has(method.toUpperCase())) return true;
  return false;
}

/**
 * A URL host that names a service: one DNS label (no dot), not an IP address, not `localhost`.
 * Everything else passes through untouched.
 */
export function isServiceHost(hostname: string): boolean {
  return (
    /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(hostname) &&
    hostname.toLowerCase() !== 'localhost' &&
    isIP(hostname) === 0
  );
}
