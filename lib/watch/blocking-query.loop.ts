import type { IndexedResult } from '../consul/consul.types.js';
import { abortableDelay } from '../resilience/abortable-delay.js';
import { backoffDelay, type BackoffPolicy } from '../resilience/backoff.js';
import type { TokenBucket } from '../resilience/token-bucket.js';

/** Consul's rules: reset to 0 when the index goes backwards, and never send one below 1. */
export function nextIndex(previous: number, received: number): number {
  if (received < previous) return 0;
  return Math.max(received, 1);
}

export interface BlockingQueryLoop<T> {
  signal: AbortSignal;
  /** Rate limit on wake-ups. */
  bucket: TokenBucket;
  backoff: BackoffPolicy;
  /**
   * Asked before each read: `false` ends the loop instead of sending another long-poll (the one
   * just answered was left to end by itself).
   */
  rearm?(): boolean;
  read(index: number): Promise<IndexedResult<T>>;
  onAnswer(value: T): void;
  /** Called for each failure; `false` ends the loop. */
  onError(error: unknown): boolean;
}

/**
 * Follows one blocking query until `signal` aborts or `rearm()` says no more: rate-limited
 * wake-ups, Consul's index rules, exponential backoff with jitter on errors.
 */
export async function followBlockingQuery<T>(loop: BlockingQueryLoop<T>): Promise<void> {
  let index = 0;
  let failures = 0;
  while (!loop.signal.aborted) {
    if (!(await loop.bucket.take(loop.signal))) return;
    if (loop.rearm && !loop.rearm()) return;
    try {
      const result = await loop.read(index);
      index = nextIndex(index, result.index);
      failures = 0;
      loop.onAnswer(result.value);
    } catch (error) {
      if (loop.signal.aborted || !loop.onError(error)) return;
      // After an agent restart the old index is ahead of the new agent's: start over.
      index = 0;
      if (!(await abortableDelay(backoffDelay(failures++, loop.backoff), loop.signal))) return;
    }
  }
}
