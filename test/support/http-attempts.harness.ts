import diagnostics from 'node:diagnostics_channel';

// What an undici client in this process puts on the wire, seen through undici's own diagnostics
// channel (`undici:request:create`: one message per request handed to a connection pool, so one
// per attempt, including those whose connect then fails). No library code involved: the
// reliability specs count attempts (= requests + retries) and where they went with it.

export interface HttpAttempt {
  /** 'http://127.0.0.1:PORT' */
  origin: string;
  method: string;
  path: string;
  /** Position among the attempts this tap saw (1, 2, …). */
  seq: number;
  /** performance.now() when it was created. */
  at: number;
}

export interface AttemptTap {
  readonly attempts: readonly HttpAttempt[];
  /** Attempts seen so far: compare with an attempt's `seq` to order it against a moment. */
  readonly seq: number;
  /** The attempts to `origin`. */
  to(origin: string): HttpAttempt[];
  close(): void;
}

const CREATE = 'undici:request:create';

interface CreateMessage {
  request: { origin?: string | URL; method?: string; path?: string };
}

/** Records every attempt to one of `origins` (others are ignored) until `close()`. */
export function tapHttpAttempts(origins: readonly string[]): AttemptTap {
  const watched = new Set(origins);
  const attempts: HttpAttempt[] = [];
  const onCreate = (message: unknown): void => {
    const { request } = message as CreateMessage;
    const origin = new URL(String(request.origin)).origin;
    if (!watched.has(origin)) return;
    attempts.push({
      origin,
      method: request.method ?? '',
      path: request.path ?? '',
      seq: attempts.length + 1,
      at: performance.now(),
    });
  };
  diagnostics.subscribe(CREATE, onCreate);
  return {
    attempts,
    get seq() {
      return attempts.length;
    },
    to: (origin) => attempts.filter((a) => a.origin === origin),
    close: () => diagnostics.unsubscribe(CREATE, onCreate),
  };
}
