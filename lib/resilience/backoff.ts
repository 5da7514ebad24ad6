export interface BackoffPolicy {
  initialDelayMs: number;
  maxDelayMs: number;
}

/** Exponential backoff with full jitter: a random delay in [0, min(max, initial × 2^attempt)]. */
export function backoffDelay(attempt: number, policy: BackoffPolicy, random = Math.random): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** Math.min(attempt, 30));
  return Math.round(random() * ceiling);
}
