import 'reflect-metadata';
import { performance } from 'node:perf_hooks';
import type { Subscription } from 'rxjs';
import { DiscoveryService, type ServiceInstance } from '../lib/index.js';
import {
  CapturingLogger,
  TestApps,
  startConsulAgent,
  startCountingProxy,
  stopAllAgents,
  waitFor,
  type ConsulAgent,
  type CountingProxy,
} from './support/index.js';
import { max, median, reportReliability } from './support/reliability-report.harness.js';
import { seededRandom } from './support/seeded-random.harness.js';

// Watch churn against a real agent (README "Connection bound"): 1,000 subscribe/unsubscribe
// cycles over 50 names at random (seeded) intervals, while 20 other names stay watched, their
// membership changes, and 100 discover() calls per second read 10 unwatched names. No call may
// fail, every watch must hold the agent's set at the end, and the connections the agent holds
// for this client (open, plus abandoned long-polls it keeps until their wait ends: counted by
// the proxy) never exceed consul.maxSockets + watch.maxLongPolls + 2.

const SEED = Number(process.env.CHURN_SEED ?? 16);
const CYCLES = 1_000;
const CHURNED = 50;
const STEADY = 20;
const UNWATCHED = 10;
const DISCOVER_PER_SECOND = 100;
/** Cycles start at random intervals averaging this, so the churn lasts ~CYCLES × it. */
const MEAN_INTERVAL_MS = 25;
/** A cycle keeps its subscription this long at most (random). */
const MAX_HOLD_MS = 400;
const MAX_SOCKETS = 8;
// More slots than steady names, so churned names get long-polls of their own (and the feed its turn).
const MAX_LONG_POLLS = 32;
const BOUND = MAX_SOCKETS + MAX_LONG_POLLS + 2;

describe('watch churn (reliability)', () => {
  let agent: ConsulAgent;
  let proxy: CountingProxy;
  const apps = new TestApps(() => new CapturingLogger());

  beforeAll(async () => {
    agent = await startConsulAgent();
    proxy = await startCountingProxy(agent.httpPort);
  });

  afterAll(async () => {
    await apps.closeAll();
    await proxy.close();
    await stopAllAgents();
  });

  const register = (name: string, id: string) =>
    agent.api().registerService({
      Name: name,
      ID: id,
      Address: '127.0.0.1',
      Port: 9000,
      Check: { TTL: '600s', Status: 'passing' },
    });

  it('1,000 subscribe/unsubscribe cycles over 50 names: 0 failed calls, every set right, held connections within maxSockets + maxLongPolls + 2', async () => {
    const random = seededRandom(SEED);
    const churned = Array.from({ length: CHURNED }, (_, i) => `wc-churn-${i}`);
    const steady = Array.from({ length: STEADY }, (_, i) => `wc-steady-${i}`);
    const unwatched = Array.from({ length: UNWATCHED }, (_, i) => `wc-plain-${i}`);
    for (const name of [...churned, ...steady, ...unwatched]) await register(name, `${name}-1`);

    const module = await apps.start({
      autoRegister: false,
      consul: { host: '127.0.0.1', port: proxy.port, maxSockets: MAX_SOCKETS, timeoutMs: 5_000 },
      // A wait shorter than the churn, so idle long-polls both get reused and end by themselves.
      watch: { maxLongPolls: MAX_LONG_POLLS, waitTime: '10s' },
    });
    const discovery = module.get(DiscoveryService);
    proxy.resetPeak();

    const steadySets = new Map<string, ServiceInstance[]>();
    const steadySubs: Subscription[] = steady.map((name) =>
      discovery.watch(name).subscribe((set) => steadySets.set(name, set)),
    );

    const failures: string[] = [];
    const discoverMs: number[] = [];
    let discoverCalls = 0;
    let heldSamples = 0;
    let heldMax = 0;
    const sampler = setInterval(() => {
      heldSamples++;
      heldMax = Math.max(heldMax, proxy.heldConnections);
    }, 5);

    // 100 discover() calls per second of names no one watches (each one a request to the agent),
    // paced by the clock: a late tick catches up.
    const calls: Promise<void>[] = [];
    const discoverStarted = performance.now();
    const discoverOne = (): void => {
      const name = unwatched[Math.floor(random() * UNWATCHED)];
      const started = performance.now();
      discoverCalls++;
      calls.push(
        discovery.discover(name).then(
          (set) => {
            discoverMs.push(performance.now() - started);
            if (set.map((i) => i.serviceId).join() !== `${name}-1`) {
              failures.push(`discover(${name}) answered ${JSON.stringify(set)}`);
            }
          },
          (error: unknown) => void failures.push(`discover(${name}): ${String(error)}`),
        ),
      );
    };
    const discoverer = setInterval(() => {
      const due = Math.floor(((performance.now() - discoverStarted) * DISCOVER_PER_SECOND) / 1_000);
      while (discoverCalls < due) discoverOne();
    }, 1_000 / DISCOVER_PER_SECOND);

    // Membership keeps changing under the steady and churned watches.
    let changes = 0;
    const changer = setInterval(() => {
      const pool = random() < 0.5 ? steady : churned;
      const name = pool[Math.floor(random() * pool.length)];
      changes++;
      void register(name, `${name}-${2 + (changes % 3)}`).catch((error: unknown) =>
        failures.push(`register ${name}: ${String(error)}`),
      );
    }, 200);

    const churnStarted = performance.now();
    let setsSeen = 0;
    const cycles: Promise<void>[] = [];
    for (let i = 0; i < CYCLES; i++) {
      const name = churned[Math.floor(random() * CHURNED)];
      const holdMs = Math.floor(random() * MAX_HOLD_MS);
      cycles.push(
        new Promise<void>((resolve) => {
          let sub: Subscription | undefined = undefined;
          sub = discovery.watch(name).subscribe({
            next: () => setsSeen++,
            error: (error: unknown) => failures.push(`watch(${name}): ${String(error)}`),
          });
          setTimeout(() => {
            sub?.unsubscribe();
            resolve();
          }, holdMs);
        }),
      );
      await new Promise((resolve) => setTimeout(resolve, random() * 2 * MEAN_INTERVAL_MS));
    }
    await Promise.all(cycles);
    const churnMs = performance.now() - churnStarted;
    clearInterval(changer);
    clearInterval(discoverer);
    const discoverSeconds = (performance.now() - discoverStarted) / 1_000;
    await Promise.all(calls);

    // Every watch holds the agent's set: the steady ones, and each churned name watched anew.
    const truth = async (name: string) => (await agent.api().passingIds(name)).join();
    const ids = (set: readonly ServiceInstance[] | undefined) =>
      set?.map((i) => i.serviceId).join();
    await waitFor(
      async () => {
        for (const name of steady)
          if (ids(steadySets.get(name)) !== (await truth(name))) return false;
        return true;
      },
      { timeoutMs: 5_000, message: 'every steady watch should hold the agent set' },
    );
    const finalSets = new Map<string, ServiceInstance[]>();
    const finalSubs = churned.map((name) =>
      discovery.watch(name).subscribe((set) => finalSets.set(name, set)),
    );
    await waitFor(
      async () => {
        for (const name of churned)
          if (ids(finalSets.get(name)) !== (await truth(name))) return false;
        return true;
      },
      { timeoutMs: 5_000, message: 'every churned name, watched again, should hold the agent set' },
    );
    clearInterval(sampler);
    for (const s of [...steadySubs, ...finalSubs]) s.unsubscribe();

    const sorted = [...discoverMs].sort((a, b) => a - b);
    const p99 = sorted[Math.floor(sorted.length * 0.99)] ?? NaN;
    const figures = {
      seed: SEED,
      cycles: CYCLES,
      churnMs: Math.round(churnMs),
      setsSeen,
      membershipChanges: changes,
      discoverCalls,
      discoverPerSecond: Math.round(discoverCalls / discoverSeconds),
      discoverFailures: failures.length,
      discoverMedianMs: Math.round(median(discoverMs) * 10) / 10,
      discoverP99Ms: Math.round(p99 * 10) / 10,
      discoverMaxMs: Math.round(max(discoverMs)),
      bound: BOUND,
      peakOpen: proxy.peakConnections,
      peakHeld: proxy.peakHeldConnections,
      heldMaxSampled: heldMax,
      heldSamples,
      connectionsOpened: proxy.totalConnections,
    };
    reportReliability(
      'watch-churn',
      `${CYCLES} cycles in ${figures.churnMs} ms, ${discoverCalls} discover() (p99 ${figures.discoverP99Ms} ms), ${failures.length} failures, peak held ${figures.peakHeld} / bound ${BOUND}`,
      figures,
    );

    expect(failures).toEqual([]);
    expect(discoverCalls).toBeGreaterThan(0);
    expect(proxy.peakHeldConnections).toBeLessThanOrEqual(BOUND);
    expect(heldMax).toBeLessThanOrEqual(BOUND);
  }, 120_000);
});
