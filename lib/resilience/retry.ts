import { abortableDelay } from './abortable-delay.js';
import { backoffDelay, type BackoffPolicy } from './backoff.js';

export interface RetryOptions extends BackoffPolicy {
  /** `Infinity` retries until success or abort. */
  maxAttempts: number;
  signal?: AbortSignal;
  /** Whether this failure is worth another attempt (4xx answers are not). */
  isRetryable: (error: unknown) => boolean;
}

/**
 * Runs `attempt` until it succeeds, a failure is not retryable, attempts are spent or `signal`
 * aborts; rejects with the last failure.
 */
export async function withRetry<T>(
  attempt: (attemptNumber: number) => Promise<T>,
  options: RetryOptions,
): Promise<T> {
  for (let n = 0; ; n++) {
    try {
      return await attempt(n);
    } catch (error) {
      const exhausted = n + 1 >= options.maxAttempts;
      if (exhausted || !options.isRetryable(error) || options.signal?.aborted) throw error;
      const waited = await abortableDelay(backoffDelay(n, options), options.signal);
      if (!waited) throw error;
    }
  }
}
