import diagnostics from 'node:diagnostics_channel';

// What an undici client in this process puts on the wire, seen through undici's own diagnostics
// channels: `undici:request:create`, one message per request handed to a connection pool, so one
// per attempt (including those whose connect then fails), and `undici:request:error` /
// `undici:request:headers`, published before the request's handler hears of the error / the
// response. No library code involved: the reliability
// specs count attempts (= requests + retries), where they went and which failed with it.

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

/** An attempt that ended in an error (reset, refused, aborted …). */
export interface HttpFailure {
  origin: string;
  /** The error's `code`, else its name. */
  code: string;
  /** Attempts seen when it failed: those with a higher `seq` were created after it. */
  seq: number;
  at: number;
}

/** How an attempt ended, in the order the handlers heard it. */
export interface HttpOutcome {
  origin: string;
  /** Response headers arrived (`false`: an error). */
  answered: boolean;
  /** Attempts seen at that moment. */
  seq: number;
  /** performance.now() then. */
  at: number;
}

export interface AttemptTap {
  readonly attempts: readonly HttpAttempt[];
  readonly failures: readonly HttpFailure[];
  readonly outcomes: readonly HttpOutcome[];
  /** Attempts seen so far: compare with an attempt's `seq` to order it against a moment. */
  readonly seq: number;
  /** The attempts to `origin`. */
  to(origin: string): HttpAttempt[];
  /** The failed attempts to `origin`. */
  failuresOf(origin: string): HttpFailure[];
  close(): void;
}

const CREATE = 'undici:request:create';
const ERROR = 'undici:request:error';
const HEADERS = 'undici:request:headers';

interface RequestMessage {
  request: { origin?: string | URL; method?: string; path?: string };
  error?: { code?: string; name?: string };
}

/** Records every attempt to one of `origins` (others are ignored) until `close()`. */
export function tapHttpAttempts(origins: readonly string[]): AttemptTap {
  const watched = new Set(origins);
  const attempts: HttpAttempt[] = [];
  const failures: HttpFailure[] = [];
  const outcomes: HttpOutcome[] = [];
  const originOf = (message: unknown): string | undefined => {
    const origin = new URL(String((message as RequestMessage).request.origin)).origin;
    return watched.has(origin) ? origin : undefined;
  };
  const onCreate = (message: unknown): void => {
    const origin = originOf(message);
    if (origin === undefined) return;
    const { request } = message as RequestMessage;
    attempts.push({
      origin,
      method: request.method ?? '',
      path: request.path ?? '',
      seq: attempts.length + 1,
      at: performance.now(),
    });
  };
  const onError = (message: unknown): void => {
    const origin = originOf(message);
    if (origin === undefined) return;
    const { error } = message as RequestMessage;
    const code = error?.code ?? error?.name ?? 'unknown';
    failures.push({ origin, code, seq: attempts.length, at: performance.now() });
    outcomes.push({ origin, answered: false, seq: attempts.length, at: performance.now() });
  };
  const onHeaders = (message: unknown): void => {
    const origin = originOf(message);
    if (origin === undefined) return;
    outcomes.push({ origin, answered: true, seq: attempts.length, at: performance.now() });
  };
  diagnostics.subscribe(CREATE, onCreate);
  diagnostics.subscribe(ERROR, onError);
  diagnostics.subscribe(HEADERS, onHeaders);
  return {
    attempts,
    failures,
    outcomes,
    get seq() {
      return attempts.length;
    },
    to: (origin) => attempts.filter((a) => a.origin === origin),
    failuresOf: (origin) => failures.filter((f) => f.origin === origin),
    close: () => {
      diagnostics.unsubscribe(CREATE, onCreate);
      diagnostics.unsubscribe(ERROR, onError);
      diagnostics.unsubscribe(HEADERS, onHeaders);
    },
  };
}
