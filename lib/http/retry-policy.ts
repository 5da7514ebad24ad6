import { isIP } from 'node:net';

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** Why an attempt failed, as far as retrying is concerned. */
export type AttemptFailure =
  /** The request provably never left: connection refused, connect timeout. */
  | 'not-sent'
  /** Reset, socket closed, attempt timeout: it may have reached the instance. */
  | 'maybe-sent'
  /** The instance answered a status in `http.retry.statuses`. */
  | 'status';

/**
 * Whether a failed attempt may be tried again on another instance: idempotent methods on any of
 * the failures; POST/PATCH only when the request never left, unless the caller declared it
 * idempotent.
 */
export function mayRetry(method: string, failure: AttemptFailure, idempotent?: boolean): boolean {
  if (idempotent === true || IDEMPOTENT.has(method.toUpperCase())) return true;
  return failure === 'not-sent';
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
