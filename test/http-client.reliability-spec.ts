import {
  DiscoveryHttpClient,
  DiscoveryService,
  type DiscoveryModuleOptions,
} from '../lib/index.js';
import {
  describeFailure,
  killChildApps,
  killUnderLoad,
  reportReliability,
  startConsulAgent,
  startHttpChildren,
  stopAllAgents,
  tapHttpAttempts,
  TestApps,
  waitFor,
  type AttemptTap,
  type ConsulAgent,
  type HttpChild,
  type HttpChildren,
  type HttpChildrenSettings,
} from './support/index.js';

// DiscoveryHttpClient (README "Calling a service by name") against real HTTP servers in their
// own processes (test/support/fixtures/child-app.mjs in HTTP mode, registered through
// DiscoveryModule with a TTL of 30 s or more: Consul notices none of the faults within a test's
// window, so only the client's own ejection, retries and watch are at work). The client is an app
// in this process. Seen from outside: what each caller got, what the instances logged, and the attempts
// on the wire (undici's diagnostics channel, test/support/http-attempts.harness.ts).

/**
 * One round trip under 32 GETs in parallel on two loaded cores (the test process, 3 Nest servers
 * and the agent share them, with other work): up to ~240 ms seen. A request waiting for the hung
 * instance instead would take as long as it stays stopped (≥ 1 s).
 */
const ROUND_TRIP_MARGIN_MS = 400;

let agent: ConsulAgent;
const apps = new TestApps();
const groups: HttpChildren[] = [];

beforeAll(async () => {
  agent = await startConsulAgent();
});
afterEach(async () => {
  await apps.closeAll();
  await Promise.all(groups.splice(0).map((g) => g.close()));
});
afterAll(async () => {
  await killChildApps();
  await stopAllAgents();
});

async function client(http: DiscoveryModuleOptions['http'] = {}): Promise<DiscoveryHttpClient> {
  const app = await apps.start({
    autoRegister: false,
    consul: { host: '127.0.0.1', port: agent.httpPort, timeoutMs: 2_000 },
    shutdownTimeoutMs: 2_000,
    http,
  });
  return app.get(DiscoveryHttpClient);
}

async function children(
  service: string,
  extra: Omit<HttpChildrenSettings, 'agent' | 'service' | 'count'> = {},
): Promise<HttpChildren> {
  const group = await startHttpChildren({ agent, service, count: 3, ...extra });
  groups.push(group);
  return group;
}

function count(values: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return counts;
}

interface Call {
  ok: boolean;
  /** The answer's body (the instance's serviceId for /whoami). */
  body?: string;
  error?: string;
  startedAt: number;
  ms: number;
}

/**
 * `concurrency` callers loop GETs of `url` until `until()` is true (checked before each call);
 * returns every call. Load, not a wait: the test decides when it has seen enough.
 */
async function load(
  http: DiscoveryHttpClient,
  url: string,
  concurrency: number,
  until: () => boolean,
  calls: Call[] = [],
): Promise<Call[]> {
  const caller = async (): Promise<void> => {
    while (!until()) {
      const startedAt = performance.now();
      try {
        const response = await http.fetch(url);
        const body = await response.text();
        calls.push({
          ok: response.status === 200,
          body,
          startedAt,
          ms: performance.now() - startedAt,
        });
      } catch (error) {
        calls.push({
          ok: false,
          error: describeFailure(error),
          startedAt,
          ms: performance.now() - startedAt,
        });
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, caller));
  return calls;
}

const failures = (calls: readonly Call[]): Call[] => calls.filter((c) => !c.ok);

describe('spread over three server processes', () => {
  let group: HttpChildren;
  beforeAll(async () => {
    group = await startHttpChildren({ agent, service: 'spread', count: 3 });
  });
  afterAll(async () => {
    await group.close();
  });

  it('round-robin: 3,000 sequential GETs, within ±1 of 1,000 per instance', async () => {
    const http = await client();
    const answers: string[] = [];
    for (let i = 0; i < 3_000; i++) {
      const response = await http.fetch('http://spread/whoami');
      answers.push(await response.text());
    }
    const counts = count(answers);
    expect([...counts.keys()].sort()).toEqual(group.children.map((c) => c.serviceId).sort());
    for (const n of counts.values()) expect(Math.abs(n - 1_000)).toBeLessThanOrEqual(1);
  });

  it('least-request sends fewer requests to an instance made slow', async () => {
    // Well above a loaded machine's own latency (tens of ms with 16 GETs in flight).
    const SLOW_MS = 250;
    const [slow, ...fast] = group.children;
    await slow.setDelays({ whoamiMs: SLOW_MS });
    try {
      const http = await client({ strategy: 'least-request' });
      const calls: Call[] = [];
      await load(http, 'http://spread/whoami', 16, () => calls.length >= 1_500, calls);
      expect(failures(calls)).toEqual([]);
      const counts = count(calls.map((c) => c.body as string));
      const slowCount = counts.get(slow.serviceId) ?? 0;
      const fastCounts = fast.map((c) => counts.get(c.serviceId) ?? 0);
      reportReliability(
        'http-least-request',
        `${calls.length} GETs, 16 in parallel: slow instance (+${SLOW_MS} ms) ${slowCount}, others ${fastCounts.join(', ')}`,
        { slow: slowCount, fast: fastCounts },
      );
      // Round-robin would give each a third.
      expect(slowCount * 2).toBeLessThan(Math.min(...fastCounts));
    } finally {
      await slow.setDelays({ whoamiMs: 0 });
    }
  });
});

// Retries per kill are the GETs sent to the victim that it never answered: those in flight when
// it dies, and on a loaded machine those sent while the kernel is still ending it (up to ~250 ms:
// 12–42 retries seen, attempts to it created after the kill but before its death). 0.1 % of
// 50,000 covers that. On a loaded machine that takes over a minute (~500 GETs/s seen), hence a
// TTL Consul cannot reach within the test.
const KILL_PHASE = { requests: 25_000, ms: 2_500 };
const CONCURRENCY = 32;
const CONSECUTIVE_FAILURES = 5; // http.outlier default

it(`SIGKILL of one of three under load (${CONCURRENCY} GETs in parallel, ≥ 5 s): 0 failed, retries ≤ 0.1%`, async () => {
  const group = await children('killed-get', { ttl: '10m', maxLifeMs: 600_000 });
  const http = await client();
  const victim = group.children[0];
  const result = await killUnderLoad({
    children: group,
    fetch: (url) => http.fetch(url),
    concurrency: CONCURRENCY,
    before: KILL_PHASE,
    after: KILL_PHASE,
    consecutiveFailures: CONSECUTIVE_FAILURES,
  });
  // Consul still holds the dead instance as passing: the client alone hid the death.
  expect(await agent.api().passingIds('killed-get')).toContain(victim.serviceId);
  reportReliability(
    'http-sigkill',
    `${result.requests} GETs in ${Math.round(result.loadMs)} ms: ${result.failed} failed, ` +
      `${result.retries} retries (${((100 * result.retries) / result.requests).toFixed(3)}%), ` +
      `${result.attemptsToVictimAfterKill} attempts to the dead instance after the kill, ` +
      `${result.victimAttemptsWhileEjected} while ejected (after its ${CONSECUTIVE_FAILURES}th ` +
      `failed attempt in a row, for baseEjectionMs) (${result.failedOnVictim} failed)`,
    { ...result, latencyBeforeMs: undefined, latencyDuringMs: undefined },
  );
  expect(result.failures).toEqual([]);
  expect(result.failed).toBe(0);
  expect(result.loadMs).toBeGreaterThanOrEqual(5_000);
  expect(result.retries).toBeLessThanOrEqual(result.requests * 0.001);
  // Each attempt that failed on the dead instance was retried once, nothing else was …
  expect(result.failedOnOthers).toBe(0);
  expect(result.retries).toBe(result.failedOnVictim);
  // … and from the failure that ejected it on (its 5th with no answer in between), no attempt
  // went to it while the ejection lasted (a slow machine's load may outlast it: the attempts
  // sent to it before its next failure fail, are retried — counted above — and that failure
  // ejects it again, for twice as long).
  expect(result.victimAttemptsWhileEjected).toBe(0);
  // It was in the rotation before the kill.
  expect(result.answeredBy[victim.serviceId]).toBeGreaterThan(0);
}, 600_000);

it('SIGKILL with a POST in flight on the dying instance: that POST fails, never retried; 0 duplicates', async () => {
  const group = await children('killed-post');
  const [victim, ...live] = group.children;
  const http = await client();
  await (await http.fetch('http://killed-post/whoami')).text(); // the watch's first set
  // The victim logs every POST and holds its answer: each caller ends up waiting on it.
  await victim.setDelays({ postMs: 60_000 });
  const CALLERS = 8;
  const results = new Map<string, { ok: boolean; by?: string; error?: string }>();
  let next = 0;
  let stopAt = Infinity;
  const caller = async (): Promise<void> => {
    while (performance.now() < stopAt) {
      const id = `order-${next++}`;
      try {
        const response = await http.fetch('http://killed-post/orders', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ id }),
        });
        const answer = (await response.json()) as { serviceId: string };
        results.set(id, { ok: response.status === 201, by: answer.serviceId });
      } catch (error) {
        results.set(id, { ok: false, error: describeFailure(error) });
      }
    }
  };
  const callers = Promise.all(Array.from({ length: CALLERS }, caller));
  // Every caller's POST is on the victim (logged, unanswered): nothing else is in flight.
  await waitFor(() => victim.posted().length === CALLERS, {
    timeoutMs: 10_000,
    intervalMs: 10,
    message: 'every caller waiting on the victim',
  });
  victim.kill('SIGKILL');
  await victim.app.exited;
  // POSTs go on for a second after the death: those picking the dead instance are refused,
  // provably never sent, and retried.
  stopAt = performance.now() + 1_000;
  await callers;

  const ids = (child: HttpChild): string[] => child.posted().map((b) => (b as { id: string }).id);
  const onVictim = ids(victim);
  const onLive = live.flatMap(ids);
  const everything = [...onVictim, ...onLive];
  const failed = [...results].filter(([, r]) => !r.ok).map(([id]) => id);
  const succeeded = [...results].filter(([, r]) => r.ok);
  reportReliability(
    'http-sigkill-post',
    `${results.size} POSTs: ${failed.length} failed (the ${onVictim.length} held by the killed instance), ` +
      `${succeeded.length} succeeded; ${everything.length - new Set(everything).size} duplicates`,
    { posts: results.size, failed, onVictim, onLive: onLive.length },
  );
  expect(new Set(everything).size).toBe(everything.length);
  expect(failed.sort()).toEqual([...onVictim].sort());
  for (const [id, r] of succeeded) {
    expect(onLive).toContain(id);
    expect(r.by).not.toBe(victim.serviceId);
  }
  expect(succeeded.length).toBeGreaterThan(CALLERS);
  expect(results.size).toBe(next);
});

it('SIGSTOP of one (hung) with attemptMs 250: 0 failed, bounded latency, ejected, re-admitted after its ejection', async () => {
  const ATTEMPT_MS = 250;
  const EJECTION_MS = 3_000;
  const QUIET_MS = 500;
  const group = await children('hung');
  const victim = group.children[0];
  const http = await client({
    timeouts: { attemptMs: ATTEMPT_MS },
    outlier: { baseEjectionMs: EJECTION_MS },
  });
  await (await http.fetch('http://hung/whoami')).text();
  const tap: AttemptTap = tapHttpAttempts(group.children.map((c) => c.origin));
  let done = false;
  const calls: Call[] = [];
  const running = load(http, 'http://hung/whoami', 32, () => done, calls);
  try {
    await waitFor(() => calls.length >= 1_000, {
      timeoutMs: 10_000,
      message: 'load before SIGSTOP',
    });
    victim.stop();
    const stoppedAt = performance.now();
    // Ejected: no attempt has gone to it for QUIET_MS (a live instance gets one every few ms).
    const lastBefore = await waitFor(
      () => {
        const last = tap.to(victim.origin).at(-1);
        return last && last.at > stoppedAt && performance.now() - last.at >= QUIET_MS && last;
      },
      {
        timeoutMs: EJECTION_MS - QUIET_MS,
        intervalMs: 10,
        message: 'no attempts to the hung instance',
      },
    );
    victim.resume();
    const resumedAt = performance.now();
    const readmitted = await waitFor(
      () => tap.to(victim.origin).find((a) => a.seq > lastBefore.seq),
      { timeoutMs: EJECTION_MS + 5_000, intervalMs: 10, message: 're-admitted after its ejection' },
    );
    await waitFor(
      () => calls.some((c) => c.startedAt > readmitted.at && c.body === victim.serviceId),
      { timeoutMs: 5_000, intervalMs: 10, message: 'answers from the re-admitted instance' },
    );
    done = true;
    await running;

    const maxMs = Math.max(...calls.map((c) => c.ms));
    const gapMs = readmitted.at - lastBefore.at;
    reportReliability(
      'http-sigstop',
      `${calls.length} GETs: ${failures(calls).length} failed, max latency ${Math.round(maxMs)} ms ` +
        `(attemptMs ${ATTEMPT_MS}); last attempt to the hung instance ${Math.round(lastBefore.at - stoppedAt)} ms ` +
        `after SIGSTOP, next one ${Math.round(gapMs)} ms later (baseEjectionMs ${EJECTION_MS})`,
      { calls: calls.length, maxMs, gapMs, resumedAfterMs: resumedAt - stoppedAt },
    );
    expect(failures(calls)).toEqual([]);
    expect(maxMs).toBeLessThanOrEqual(ATTEMPT_MS + ROUND_TRIP_MARGIN_MS);
    // Still hung when the ejection began and long after; back only once the ejection ran out.
    expect(resumedAt).toBeLessThan(readmitted.at);
    expect(gapMs).toBeGreaterThanOrEqual(EJECTION_MS);
    // The ejection began by the time the last attempt's own timeout ran out.
    expect(gapMs).toBeLessThanOrEqual(EJECTION_MS + ATTEMPT_MS + ROUND_TRIP_MARGIN_MS);
  } finally {
    done = true;
    victim.resume();
    tap.close();
    await running;
  }
});

it('SIGTERM of one (it deregisters): no request reaches it once the watch dropped it; 0 failed', async () => {
  const group = await children('leaving');
  const victim = group.children[0];
  const app = await apps.start({
    autoRegister: false,
    consul: { host: '127.0.0.1', port: agent.httpPort, timeoutMs: 2_000 },
    shutdownTimeoutMs: 2_000,
  });
  const http = app.get(DiscoveryHttpClient);
  await (await http.fetch('http://leaving/whoami')).text();
  const tap = tapHttpAttempts(group.children.map((c) => c.origin));
  // The client's watch is this one (one watch per name): the moment it drops the victim.
  let droppedSeq: number | undefined;
  let droppedAt: number | undefined;
  const subscription = app
    .get(DiscoveryService)
    .watch('leaving')
    .subscribe((instances) => {
      if (droppedSeq === undefined && !instances.some((i) => i.serviceId === victim.serviceId)) {
        droppedSeq = tap.seq;
        droppedAt = performance.now();
      }
    });
  let done = false;
  const calls: Call[] = [];
  const running = load(http, 'http://leaving/whoami', 32, () => done, calls);
  try {
    await waitFor(() => calls.length >= 1_000, {
      timeoutMs: 10_000,
      message: 'load before SIGTERM',
    });
    const termAt = performance.now();
    victim.kill('SIGTERM');
    await waitFor(() => droppedAt, { timeoutMs: 10_000, intervalMs: 5, message: 'watch drops it' });
    const exit = await victim.app.exited;
    const after = calls.length;
    await waitFor(() => calls.length >= after + 1_000, {
      timeoutMs: 10_000,
      message: 'load after it left',
    });
    done = true;
    await running;

    const toVictim = tap.to(victim.origin);
    const late = toVictim.filter((a) => a.seq > (droppedSeq as number));
    reportReliability(
      'http-sigterm',
      `${calls.length} GETs: ${failures(calls).length} failed; ${toVictim.length} attempts reached the ` +
        `leaving instance, ${late.length} after the watch dropped it (${Math.round((droppedAt as number) - termAt)} ms ` +
        `after SIGTERM; exited ${exit.at - (victim.app.signalledAt as number)} ms after it)`,
      { calls: calls.length, toVictim: toVictim.length, late: late.length, exit },
    );
    expect(exit.signal).toBe('SIGTERM');
    expect(failures(calls)).toEqual([]);
    expect(toVictim.length).toBeGreaterThan(0);
    expect(late).toEqual([]);
  } finally {
    done = true;
    subscription.unsubscribe();
    tap.close();
    await running;
  }
});

it('rolling restart under load: each of three SIGTERMed and restarted in turn, 32 GETs in parallel: 0 failed', async () => {
  // Each new process registers once it listens (README "Registration and listen()"): registered
  // in init(), it is in the watch before it listens, its first attempts are refused, and five of
  // them in a row eject it for baseEjectionMs — longer than this test waits for it to answer.
  const group = await children('rolling', { maxLifeMs: 600_000, registerAfterListen: true });
  const http = await client();
  await (await http.fetch('http://rolling/whoami')).text();
  let done = false;
  const calls: Call[] = [];
  const running = load(http, 'http://rolling/whoami', CONCURRENCY, () => done, calls);
  const restarts: string[] = [];
  try {
    await waitFor(() => calls.length >= 500, { timeoutMs: 30_000, message: 'load before' });
    for (let i = 0; i < group.children.length; i++) {
      const startedAt = performance.now();
      const before = calls.length;
      const restarted = await group.restart(i);
      // The new process answers (the client's watch took it in, and it did not inherit the
      // failures of its previous life: same node + serviceId) before the next one goes down.
      const tap = tapHttpAttempts([restarted.origin]);
      try {
        await waitFor(() => tap.outcomes.some((o) => o.answered), {
          timeoutMs: 20_000,
          intervalMs: 10,
          message: `restarted ${restarted.serviceId} answering`,
        });
      } catch (error) {
        // What the client would pick now, and what reached the new process.
        const picks = [0, 1, 2].map(() => http.choose('rolling')?.port);
        throw new Error(
          `${(error as Error).message}; picks now on ports ${picks.join(', ')} (new: ` +
            `${restarted.port}); attempts to it ${tap.attempts.length}, failed ` +
            JSON.stringify(tap.failures.slice(0, 3)),
          { cause: error },
        );
      } finally {
        tap.close();
      }
      restarts.push(
        `${restarted.serviceId} back in ${Math.round(performance.now() - startedAt)} ms ` +
          `(${calls.length - before} GETs meanwhile)`,
      );
    }
    const after = calls.length;
    await waitFor(() => calls.length >= after + 1_000, {
      timeoutMs: 10_000,
      message: 'load after',
    });
    done = true;
    await running;
    reportReliability(
      'http-rolling-restart',
      `${calls.length} GETs, ${CONCURRENCY} in parallel, through a rolling restart of 3: ` +
        `${failures(calls).length} failed; ${restarts.join('; ')}`,
      { calls: calls.length, failed: failures(calls).slice(0, 5), restarts },
    );
    expect(failures(calls)).toEqual([]);
  } finally {
    done = true;
    await running;
  }
}, 300_000);

it('shardKey reaches the instance whose ShardingService.owns(key) is true', async () => {
  const group = await children('sharded-http', {
    sharding: { partitions: 16, mode: 'cooperative', settleMs: 200, handoffDelayMs: 100 },
  });
  const keys = [...Array.from({ length: 30 }, (_, i) => `order-${i}`), 'zürich', ''];
  // Each key owned by exactly one instance, as each instance itself says — once the table spans
  // all three (while the first is alone it owns every key, and exactly one owner holds then too).
  const owners = await waitFor(
    async () => {
      const found = new Map<string, string>();
      for (const key of keys) {
        const answers = await Promise.all(group.children.map((c) => c.owns(key)));
        const owning = answers.filter((a) => a.owns);
        if (owning.length !== 1) return undefined;
        found.set(key, owning[0].serviceId);
      }
      return new Set(found.values()).size === 3 ? found : undefined;
    },
    {
      timeoutMs: 15_000,
      intervalMs: 50,
      message: 'every key owned by exactly one instance, the keys spread over all three',
    },
  );
  expect(new Set(owners.values()).size).toBe(3);
  const http = await client();
  for (const key of keys) {
    const response = await http.fetch(`http://sharded-http/owns?key=${encodeURIComponent(key)}`, {
      shardKey: key,
    });
    expect(await response.json()).toEqual(
      expect.objectContaining({ serviceId: owners.get(key), owns: true }),
    );
  }
});
