import { abortableDelay } from './abortable-delay.js';
import { backoffDelay } from './backoff.js';
import { withRetry } from './retry.js';
import { TokenBucket } from './token-bucket.js';

describe('backoffDelay', () => {
  const policy = { initialDelayMs: 100, maxDelayMs: 1000 };

  it('grows exponentially under full jitter and is capped', () => {
    expect(backoffDelay(0, policy, () => 1)).toBe(100);
    expect(backoffDelay(3, policy, () => 1)).toBe(800);
    expect(backoffDelay(4, policy, () => 1)).toBe(1000);
    expect(backoffDelay(500, policy, () => 1)).toBe(1000);
    expect(backoffDelay(3, policy, () => 0)).toBe(0);
    expect(backoffDelay(3, policy, () => 0.5)).toBe(400);
  });
});

describe('withRetry', () => {
  const fast = { initialDelayMs: 1, maxDelayMs: 2 };

  it('stops at maxAttempts and rejects with the last failure', async () => {
    let calls = 0;
    await expect(
      withRetry(
        () => {
          calls++;
          return Promise.reject(new Error(`failure ${calls}`));
        },
        { ...fast, maxAttempts: 4, isRetryable: () => true },
      ),
    ).rejects.toThrow('failure 4');
    expect(calls).toBe(4);
  });

  it('does not retry what is not retryable', async () => {
    let calls = 0;
    const attempt = (): Promise<never> => {
      calls++;
      return Promise.reject(new Error('4xx'));
    };
    await expect(
      withRetry(attempt, { ...fast, maxAttempts: 5, isRetryable: () => false }),
    ).rejects.toThrow('4xx');
    expect(calls).toBe(1);
  });

  it('returns the first success', async () => {
    let calls = 0;
    const value = await withRetry(
      () => (++calls < 3 ? Promise.reject(new Error('no')) : Promise.resolve('yes')),
      { ...fast, maxAttempts: Infinity, isRetryable: () => true },
    );
    expect(value).toBe('yes');
    expect(calls).toBe(3);
  });

  it('stops waiting when the signal aborts', async () => {
    const controller = new AbortController();
    const started = Date.now();
    const run = withRetry(() => Promise.reject(new Error('down')), {
      initialDelayMs: 60_000,
      maxDelayMs: 60_000,
      maxAttempts: Infinity,
      isRetryable: () => true,
      signal: controller.signal,
    });
    controller.abort();
    await expect(run).rejects.toThrow('down');
    expect(Date.now() - started).toBeLessThan(1000);
  });
});

describe('abortableDelay', () => {
  it('resolves true after the delay and false at once on abort', async () => {
    await expect(abortableDelay(5)).resolves.toBe(true);
    const controller = new AbortController();
    const pending = abortableDelay(60_000, controller.signal);
    controller.abort();
    await expect(pending).resolves.toBe(false);
    await expect(abortableDelay(60_000, controller.signal)).resolves.toBe(false);
  });
});

describe('TokenBucket', () => {
  it('allows a burst, then paces at the refill rate', async () => {
    const bucket = new TokenBucket(50, 3);
    const started = performance.now();
    for (let i = 0; i < 3; i++) await bucket.take();
    expect(performance.now() - started).toBeLessThan(15);
    for (let i = 0; i < 3; i++) await bucket.take();
    // three more tokens at 50/s need at least ~60 ms
    expect(performance.now() - started).toBeGreaterThanOrEqual(50);
  });

  it('gives up when aborted while waiting', async () => {
    const bucket = new TokenBucket(0.01, 1);
    await bucket.take();
    const controller = new AbortController();
    const pending = bucket.take(controller.signal);
    controller.abort();
    await expect(pending).resolves.toBe(false);
  });
});
