export interface WaitForOptions {
  timeoutMs: number;
  intervalMs?: number;
  message: string;
  /** Aborting stops the polling at once and rejects with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * Polls `probe` until it returns something other than `undefined`, `null` or `false`, and
 * resolves with that value. A throwing probe counts as "not yet". Bounded: rejects after
 * `timeoutMs` (even if a probe call hangs) with `message`, the last value and the last error.
 */
export async function waitFor<T>(
  probe: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  { timeoutMs, intervalMs = 25, message, signal }: WaitForOptions,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastValue: unknown;
  let lastError: unknown;
  for (;;) {
    signal?.throwIfAborted();
    try {
      const remaining = Math.max(deadline - Date.now(), 1);
      const value = await withDeadline(Promise.resolve(probe()), remaining, signal);
      if (value !== undefined && value !== null && value !== false) return value;
      lastValue = value;
      lastError = undefined;
    } catch (error) {
      signal?.throwIfAborted();
      lastError = error;
    }
    // The last probe runs at the deadline, not one interval before it.
    const remaining = deadline - Date.now();
    if (remaining <= 0) break;
    await delay(Math.min(intervalMs, remaining), signal);
  }
  throw new Error(
    `${message} (timed out after ${timeoutMs} ms; last value: ${show(lastValue)}` +
      (lastError === undefined ? ')' : `; last error: ${show(lastError)})`),
  );
}

/** Resolves after `ms`; rejects early when `signal` aborts. For retry pacing, not for "waiting for things". */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(toError(signal?.reason));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

const PROBE_TIMED_OUT = Symbol('probe timed out');

async function withDeadline<T>(promise: Promise<T>, ms: number, signal?: AbortSignal): Promise<T> {
  const controller = new AbortController();
  const onAbort = (): void => controller.abort(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const timeout = delay(ms, controller.signal).then(() => PROBE_TIMED_OUT);
    const result = await Promise.race([promise, timeout]);
    if (result === PROBE_TIMED_OUT) throw new Error(`probe still pending after ${ms} ms`);
    return result as T;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    controller.abort(); // clears the timer; Promise.race already handles its rejection
  }
}

function toError(reason: unknown): Error {
  return reason instanceof Error
    ? reason
    : new Error(typeof reason === 'string' ? reason : 'aborted');
}

function show(value: unknown): string {
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  try {
    const text = JSON.stringify(value);
    return text === undefined ? String(value) : text.length > 500 ? `${text.slice(0, 500)}…` : text;
  } catch {
    return String(value);
  }
}
