import { tapHttpAttempts, type HttpOutcome } from './http-attempts.harness.js';
import type { HttpChildren } from './http-children.harness.js';

// The SIGKILL-under-load scenario, shared by test/http-client.reliability-spec.ts and
// bench/http-failover.mjs: `concurrency` callers loop GETs through the client under test; one
// instance is SIGKILLed mid-way (its TTL is long: Consul does not notice within the window, so
// only the client's own ejection and retries can hide the death). Measured from outside: what
// each caller got, and the attempts on the wire (tapHttpAttempts) — retries = attempts − requests.

/** What the scenario needs of a response (undici's or the global fetch's). */
export interface LoadResponse {
  status: number;
  text(): Promise<string>;
}

export interface KillUnderLoadOptions {
  children: HttpChildren;
  /** The client under test, e.g. `(url) => http.fetch(url)` of a DiscoveryHttpClient. */
  fetch: (url: string) => Promise<LoadResponse>;
  /** Index of the child to SIGKILL (default 0). */
  victim?: number;
  /** Callers in parallel (default 32). */
  concurrency?: number;
  /**
   * Load before the kill and after it, each until both bounds are reached: at least this many
   * requests started (default 10,000; retries per kill are about the requests in flight on the
   * victim, so their share depends on the count, not on the machine's speed) and at least this
   * long (default 2,500 ms); `ms: 0` for a count alone.
   */
  before?: { requests?: number; ms?: number };
  after?: { requests?: number; ms?: number };
  /** Requests started this long after the kill count as "during" (default 1000 ms). */
  duringMs?: number;
  /** The path to GET (default '/whoami': answers the instance's serviceId). */
  path?: string;
  /** The client's `http.outlier.consecutiveFailures` (default 5), to find when it ejected. */
  consecutiveFailures?: number;
  /**
   * The client's `http.outlier.baseEjectionMs` (default 30,000): how long that first ejection
   * lasts (a slow machine's load can outlast it; the instance is then tried again).
   */
  baseEjectionMs?: number;
}

export interface KillUnderLoadResult {
  requests: number;
  /** Requests started after the kill. */
  requestsAfterKill: number;
  failed: number;
  /** The first few failures' messages (cause included). */
  failures: string[];
  /** Attempts on the wire to any child, and how many of them were retries. */
  attempts: number;
  retries: number;
  /** Attempts to the victim after the kill. */
  attemptsToVictimAfterKill: number;
  /** Attempts that failed on the victim / on the other instances. */
  failedOnVictim: number;
  failedOnOthers: number;
  /**
   * Attempts to the dead instance created after its `consecutiveFailures`-th failure in a row
   * (a response in between resets the count, as passive ejection does) and before
   * `baseEjectionMs` had passed since; `undefined` when it never failed that many times in a row.
   */
  victimAttemptsWhileEjected?: number;
  /** serviceId → successful answers. */
  answeredBy: Record<string, number>;
  /** Latency (ms, to the body read) of requests started before the kill / within `duringMs` after it. */
  latencyBeforeMs: number[];
  latencyDuringMs: number[];
  /** Wall time of the load, ms, and when the kill came in it. */
  loadMs: number;
  killedAtMs: number;
}

const FAILURES_KEPT = 5;

/** A failed call in one line: the error's message and its causes' (fetch puts the real one there). */
export function describeFailure(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = (error as { cause?: unknown }).cause;
  return cause === undefined
    ? error.message
    : `${error.message} (cause: ${describeFailure(cause)})`;
}

export async function killUnderLoad(o: KillUnderLoadOptions): Promise<KillUnderLoadResult> {
  const { children } = o.children;
  const victim = children[o.victim ?? 0];
  const concurrency = o.concurrency ?? 32;
  const phase = (p: { requests?: number; ms?: number } = {}) => ({
    requests: p.requests ?? 10_000,
    ms: p.ms ?? 2_500,
  });
  const before = phase(o.before);
  const after = phase(o.after);
  const duringMs = o.duringMs ?? 1_000;
  const url = `http://${o.children.service}${o.path ?? '/whoami'}`;

  // Warm-up, not counted: the first call starts the client's watch and waits for its first set.
  for (let i = 0; i < children.length; i++) await (await o.fetch(url)).text();

  const tap = tapHttpAttempts(children.map((c) => c.origin));
  const result: KillUnderLoadResult = {
    requests: 0,
    requestsAfterKill: 0,
    failed: 0,
    failures: [],
    attempts: 0,
    retries: 0,
    attemptsToVictimAfterKill: 0,
    failedOnVictim: 0,
    failedOnOthers: 0,
    answeredBy: {},
    latencyBeforeMs: [],
    latencyDuringMs: [],
    loadMs: 0,
    killedAtMs: 0,
  };
  const start = performance.now();
  let killedAt = Infinity;
  let requestsAtKill = Infinity;
  let seqAtKill = Infinity;
  /** Before each request: kills the victim once the first phase is over; false when done. */
  const goOn = (now: number): boolean => {
    if (killedAt === Infinity) {
      if (result.requests >= before.requests && now - start >= before.ms) {
        seqAtKill = tap.seq;
        requestsAtKill = result.requests;
        killedAt = now;
        victim.kill('SIGKILL');
      }
      return true;
    }
    return result.requests - requestsAtKill < after.requests || now - killedAt < after.ms;
  };
  const caller = async (): Promise<void> => {
    while (goOn(performance.now())) {
      const t0 = performance.now();
      result.requests++;
      try {
        const response = await o.fetch(url);
        const body = await response.text();
        if (response.status !== 200) throw new Error(`status ${response.status}: ${body}`);
        result.answeredBy[body] = (result.answeredBy[body] ?? 0) + 1;
      } catch (error) {
        result.failed++;
        if (result.failures.length < FAILURES_KEPT) result.failures.push(describeFailure(error));
      }
      const ms = performance.now() - t0;
      if (t0 < killedAt) result.latencyBeforeMs.push(ms);
      else if (t0 < killedAt + duringMs) result.latencyDuringMs.push(ms);
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, caller));
  } finally {
    tap.close();
  }
  result.loadMs = performance.now() - start;
  result.killedAtMs = killedAt - start;
  result.requestsAfterKill = result.requests - requestsAtKill;
  await victim.app.exited;
  result.attempts = tap.seq;
  result.retries = result.attempts - result.requests;
  const toVictim = tap.to(victim.origin);
  result.attemptsToVictimAfterKill = toVictim.filter((a) => a.seq > seqAtKill).length;
  const onVictim = tap.failuresOf(victim.origin);
  result.failedOnVictim = onVictim.length;
  result.failedOnOthers = tap.failures.length - onVictim.length;
  const ejected = nthFailureInARow(tap.outcomes, victim.origin, o.consecutiveFailures ?? 5);
  if (ejected !== undefined) {
    const until = ejected.at + (o.baseEjectionMs ?? 30_000);
    result.victimAttemptsWhileEjected = toVictim.filter(
      (a) => a.seq > ejected.seq && a.at < until,
    ).length;
  }
  return result;
}

/** The outcome with which `origin` had failed `n` times with no answer in between, if it did. */
function nthFailureInARow(
  outcomes: readonly HttpOutcome[],
  origin: string,
  n: number,
): HttpOutcome | undefined {
  let inARow = 0;
  for (const outcome of outcomes) {
    if (outcome.origin !== origin) continue;
    inARow = outcome.answered ? 0 : inARow + 1;
    if (inARow === n) return outcome;
  }
  return undefined;
}
