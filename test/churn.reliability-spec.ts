import 'reflect-metadata';
import { performance } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import {
  CONSUL_CLIENT,
  DISCOVERY_PROVIDER,
  DiscoveryModule,
  DiscoveryService,
  type ConsulClient,
  type DiscoveryModuleOptions,
  type ServiceDiscoveryProtocol,
  type ServiceInstance,
} from '../lib/index.js';
import {
  CapturingLogger,
  startConsulAgent,
  startCountingProxy,
  stopAllAgents,
  waitFor,
  type ConsulAgent,
  type CountingProxy,
} from './support/index.js';

// Churn under load against a real agent: 200 instances come and go in 4 waves (50 up and the
// previous 50 down, concurrently, through the raw API) while 10,000 discover() calls run —
// half served by a watch, half read from Consul. Every answer must hold only instances that were
// passing at some moment of the call; nothing may leak once the app is closed.

const NAME = 'churn';
const TAG = 'churn';
const WAVES = 4;
const PER_WAVE = 50;
const CALLS = 10_000;
const WATCHED_CALLS = CALLS / 2;
const UNWATCHED_CALLS = CALLS - WATCHED_CALLS;
const CHURN_CONCURRENCY = 6;
const WATCHED_WORKERS = 8;
const UNWATCHED_WORKERS = 16;
/** Watched answers lag Consul by the agent's wake-up + one poll round-trip (+ rate limit). */
const WATCH_LAG_ALLOWANCE_MS = 2_000;
/**
 * heapUsed after close vs. the baseline. Measured Δ 9–13 MB, all of it the harness's own buffers
 * (agent log capture, the proxy's ~5,300 request lines, fetch resource timings: heap-snapshot
 * diff). Retaining the 5,000 direct answers alone would add far more; the WeakRef checks are the
 * precise "nothing of the app is left" proof.
 */
const HEAP_TOLERANCE_BYTES = 24 * 1024 * 1024;

/** A full GC: `global.gc` when node runs with --expose-gc, else one made available at runtime. */
function fullGc(): () => void {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (typeof exposed === 'function') return exposed;
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

async function settledHeap(gc: () => void): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  return process.memoryUsage().heapUsed;
}

interface Interval {
  regStart: number;
  regEnd?: number;
  deregStart?: number;
  deregEnd?: number;
}

const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MB`;

describe('churn under load', () => {
  let agent: ConsulAgent;
  let proxy: CountingProxy;
  const logger = new CapturingLogger();
  const figures: string[] = [];

  const options = (): DiscoveryModuleOptions => ({
    autoRegister: false,
    consul: { host: '127.0.0.1', port: proxy.port, timeoutMs: 10_000 },
    watch: { waitTime: '10s' },
    shutdownTimeoutMs: 3_000,
  });

  beforeAll(async () => {
    agent = await startConsulAgent();
    proxy = await startCountingProxy(agent.httpPort);
  });

  afterAll(async () => {
    await proxy?.close();
    await stopAllAgents();
    if (figures.length) process.stdout.write(`\n[reliability] churn: ${figures.join('; ')}\n`);
  });

  it('10,000 discover() calls during 200-instance churn: only live instances, no leaks', async () => {
    const gc = fullGc();
    const api = agent.api();

    // Warm-up cycle: runs every hot path (a few thousand calls of both kinds, some churn) once,
    // so code and caches that live for the process are in the baseline.
    {
      const warm = await NestFactory.createApplicationContext(DiscoveryModule.forRoot(options()), {
        logger,
        abortOnError: false,
      });
      const warmService = warm.get(DiscoveryService);
      const warmProvider = warm.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
      const sub = warmService.watch(NAME).subscribe();
      await waitFor(() => warmService.snapshot(NAME), {
        timeoutMs: 5_000,
        message: 'warm-up watch never produced its first set',
      });
      const ids = Array.from({ length: 10 }, (_, i) => `warm-${i}`);
      await Promise.all(
        ids.map((serviceId, i) =>
          api.registerService({
            Name: NAME,
            ID: serviceId,
            Address: '127.0.0.1',
            Port: 4900 + i,
            Tags: [TAG],
            Check: { TTL: '10m', Status: 'passing' },
          }),
        ),
      );
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          for (let i = 0; i < 200; i++) {
            await warmProvider.discover(NAME, { tag: TAG });
            await warmService.discover(NAME);
            await warmProvider.discover(NAME);
          }
        }),
      );
      await Promise.all(ids.map((serviceId) => api.deregisterService(serviceId)));
      await waitFor(() => warmService.snapshot(NAME)?.length === 0, {
        timeoutMs: 5_000,
        message: 'warm-up watch did not empty',
      });
      sub.unsubscribe();
      await warm.close();
    }
    await waitFor(() => proxy.openConnections === 0, {
      timeoutMs: 5_000,
      message: 'warm-up app left connections open',
    });
    const baseline = await settledHeap(gc);
    const connectionsBefore = proxy.totalConnections;
    const requestsBefore = proxy.requestLines.length;

    // Everything that references the app lives in this scope, so it can be collected after.
    const run = await (async () => {
      const app: INestApplicationContext = await NestFactory.createApplicationContext(
        DiscoveryModule.forRoot(options()),
        { logger, abortOnError: false },
      );
      const provider = app.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
      const service = app.get(DiscoveryService);
      const client = app.get<ConsulClient>(CONSUL_CLIENT);
      const appRef = new WeakRef(app);
      const clientRef = new WeakRef(client);
      const logFrom = logger.entries.length;

      const subscription = service.watch(NAME).subscribe();
      await waitFor(() => service.snapshot(NAME), {
        timeoutMs: 5_000,
        message: 'the watch never produced its first set',
      });

      const stats = {
        watched: 0,
        unwatched: 0,
        errors: [] as string[],
        violations: [] as string[],
        maxDeadLagMs: 0, // watched: longest time a deregistered instance was still served
        maxMissingLagMs: 0, // watched: longest time a registered instance was still missing
        nonEmpty: 0,
        maxSeen: 0,
        duringChurn: 0,
      };

      // ---- churn driver: raw API, interval log per instance ---------------------------------
      const intervals = new Map<string, Interval>();
      const totalOps = WAVES * PER_WAVE * 2;
      let opsDone = 0;
      const wake: (() => void)[] = [];
      const opDone = (): void => {
        opsDone++;
        for (const resolve of wake.splice(0)) resolve();
      };
      const id = (wave: number, i: number): string => `churn-${wave}-${String(i).padStart(2, '0')}`;

      const register = async (serviceId: string, port: number): Promise<void> => {
        const interval: Interval = { regStart: performance.now() };
        intervals.set(serviceId, interval);
        await api.registerService({
          Name: NAME,
          ID: serviceId,
          Address: '127.0.0.1',
          Port: port,
          Tags: [TAG],
          Check: { TTL: '10m', Status: 'passing' },
        });
        interval.regEnd = performance.now();
        opDone();
      };
      const deregister = async (serviceId: string): Promise<void> => {
        const interval = intervals.get(serviceId)!;
        interval.deregStart = performance.now();
        await api.deregisterService(serviceId);
        interval.deregEnd = performance.now();
        opDone();
      };
      // The churn never runs more than a little ahead of the callers (and vice versa, see
      // `allowed`), so the calls are spread over the whole churn whatever the machine's speed.
      let opsStarted = 0;
      const callsDone = (): number => stats.watched + stats.unwatched + stats.errors.length;
      const pool = async (jobs: (() => Promise<void>)[], width: number): Promise<void> => {
        let next = 0;
        await Promise.all(
          Array.from({ length: width }, async () => {
            while (next < jobs.length) {
              const job = jobs[next++];
              while ((opsStarted - CHURN_CONCURRENCY) / totalOps > callsDone() / CALLS) {
                await new Promise<void>((resolve) => wake.push(resolve));
              }
              opsStarted++;
              await job();
            }
          }),
        );
      };

      const churn = async (): Promise<void> => {
        for (let wave = 0; wave <= WAVES; wave++) {
          const jobs: (() => Promise<void>)[] = [];
          for (let i = 0; i < PER_WAVE; i++) {
            // Interleave: one up, one down, so the set grows and shrinks at the same time.
            if (wave < WAVES) jobs.push(() => register(id(wave, i), 5000 + wave * 100 + i));
            if (wave > 0) jobs.push(() => deregister(id(wave - 1, i)));
          }
          await pool(jobs, CHURN_CONCURRENCY);
        }
      };

      // ---- callers: paced by churn progress, so they are spread over the whole churn ----------
      let churnRunning = true;
      const issued = { watched: 0, unwatched: 0 };
      const allowed = (quota: number): number =>
        Math.ceil(((opsDone + CHURN_CONCURRENCY) / totalOps) * quota);

      const check = (
        watched: boolean,
        start: number,
        end: number,
        result: ServiceInstance[],
      ): void => {
        const ids = result.map((i) => i.serviceId);
        const sorted = [...ids].sort();
        if (ids.join() !== sorted.join()) stats.violations.push(`unsorted answer ${ids.join()}`);
        if (new Set(ids).size !== ids.length) stats.violations.push(`duplicates in ${ids.join()}`);
        if (result.length > 0) stats.nonEmpty++;
        stats.maxSeen = Math.max(stats.maxSeen, result.length);
        for (const instance of result) {
          const interval = intervals.get(instance.serviceId);
          if (!interval) {
            stats.violations.push(`unknown instance ${instance.serviceId}`);
            continue;
          }
          if (
            instance.name !== NAME ||
            instance.address !== '127.0.0.1' ||
            instance.tags.join() !== TAG
          ) {
            stats.violations.push(`malformed instance ${JSON.stringify(instance)}`);
          }
          if (interval.regStart > end) {
            stats.violations.push(`${instance.serviceId} served before it was registered`);
          }
          if (interval.deregEnd !== undefined && interval.deregEnd < start) {
            const lag = start - interval.deregEnd;
            if (watched) stats.maxDeadLagMs = Math.max(stats.maxDeadLagMs, lag);
            if (!watched || lag > WATCH_LAG_ALLOWANCE_MS) {
              stats.violations.push(
                `${watched ? 'watched' : 'unwatched'} answer served ${instance.serviceId} ` +
                  `${lag.toFixed(1)} ms after its deregistration completed`,
              );
            }
          }
        }
        // Completeness: an instance passing during the whole call must be in a direct answer.
        const present = new Set(ids);
        for (const [serviceId, interval] of intervals) {
          const passingThroughout =
            interval.regEnd !== undefined &&
            interval.regEnd <= start &&
            (interval.deregStart === undefined || interval.deregStart >= end);
          if (!passingThroughout || present.has(serviceId)) continue;
          if (watched) {
            const lag = start - interval.regEnd!;
            stats.maxMissingLagMs = Math.max(stats.maxMissingLagMs, lag);
            if (lag > WATCH_LAG_ALLOWANCE_MS) {
              stats.violations.push(`watched answer missed ${serviceId} for ${lag.toFixed(1)} ms`);
            }
          } else {
            stats.violations.push(`unwatched answer missed live instance ${serviceId}`);
          }
        }
      };

      const worker = async (watched: boolean): Promise<void> => {
        const kind = watched ? 'watched' : 'unwatched';
        const quota = watched ? WATCHED_CALLS : UNWATCHED_CALLS;
        for (;;) {
          while (churnRunning && issued[kind] >= allowed(quota)) {
            await new Promise<void>((resolve) => wake.push(resolve));
          }
          if (issued[kind] >= quota) return;
          issued[kind]++;
          if (churnRunning) stats.duringChurn++;
          const start = performance.now();
          try {
            // Watched: half through the protocol token, half through DiscoveryService.
            const result = watched
              ? issued[kind] % 2 === 0
                ? await provider.discover(NAME)
                : await service.discover(NAME)
              : await provider.discover(NAME, { tag: TAG });
            check(watched, start, performance.now(), result);
            stats[kind]++;
          } catch (error) {
            stats.errors.push(`${kind}: ${String(error)}`);
          }
          if (wake.length) for (const resolve of wake.splice(0)) resolve();
          // A watched answer is synchronous in effect: yield so churn and I/O keep moving.
          if (watched) await new Promise((resolve) => setImmediate(resolve));
        }
      };

      const started = performance.now();
      const churning = churn().finally(() => {
        churnRunning = false;
        for (const resolve of wake.splice(0)) resolve();
      });
      const calling = Promise.all([
        ...Array.from({ length: WATCHED_WORKERS }, () => worker(true)),
        ...Array.from({ length: UNWATCHED_WORKERS }, () => worker(false)),
      ]);
      await Promise.all([churning, calling]);
      const elapsedMs = performance.now() - started;
      const peakHeap = process.memoryUsage().heapUsed;

      const lines = proxy.requestLines.slice(requestsBefore);
      const direct = lines.filter(
        (l) => l.includes(`/v1/health/service/${NAME}?`) && l.includes(`tag=${TAG}`),
      );
      const polls = lines.filter(
        (l) => l.includes(`/v1/health/service/${NAME}?`) && !l.includes('tag='),
      );
      const connectionsUsed = proxy.totalConnections - connectionsBefore;
      figures.push(
        `calls=${CALLS} (watched ${stats.watched}, unwatched ${stats.unwatched}, ${stats.duringChurn} during churn)`,
        `instances=${WAVES * PER_WAVE} in ${WAVES} waves, ops=${totalOps}`,
        `elapsed=${(elapsedMs / 1000).toFixed(2)} s`,
        `errors=${stats.errors.length} violations=${stats.violations.length}`,
        `watched lag: dead served ≤${stats.maxDeadLagMs.toFixed(1)} ms, new missing ≤${stats.maxMissingLagMs.toFixed(1)} ms`,
        `long-poll rounds=${polls.length} direct reads=${direct.length} connections=${connectionsUsed}`,
      );

      expect(stats.errors).toEqual([]);
      expect(stats.violations.slice(0, 20)).toEqual([]);
      expect(stats.watched).toBe(WATCHED_CALLS);
      expect(stats.unwatched).toBe(UNWATCHED_CALLS);
      expect(intervals.size).toBe(WAVES * PER_WAVE);
      // The load really overlapped the churn and saw instances come and go.
      expect(stats.duringChurn).toBeGreaterThan(CALLS * 0.9);
      expect(stats.nonEmpty).toBeGreaterThan(CALLS * 0.5);
      expect(stats.maxSeen).toBeGreaterThanOrEqual(PER_WAVE);
      expect(stats.maxSeen).toBeLessThanOrEqual(2 * PER_WAVE);

      // Unwatched calls each read Consul once; watched ones never did (only the long-poll did).
      expect(direct.length).toBeGreaterThanOrEqual(UNWATCHED_CALLS);
      expect(direct.length).toBeLessThanOrEqual(UNWATCHED_CALLS + 20); // + reset retries at most
      expect(polls.length).toBeLessThan(totalOps + 50);
      expect(connectionsUsed).toBeLessThanOrEqual(32 + 4); // maxSockets + the long-poll pool

      // Everything is gone at the end, and the watch knows it.
      expect(await provider.discover(NAME, { tag: TAG })).toEqual([]);
      await waitFor(() => service.snapshot(NAME)?.length === 0, {
        timeoutMs: 5_000,
        message: 'the watch still serves instances after the churn',
      });
      const warnings = logger.entries
        .slice(logFrom)
        .filter((e) => e.level === 'warn' || e.level === 'error');
      expect(warnings).toEqual([]);

      // ---- close: no in-flight request, no open connection, heap back near the baseline -------
      subscription.unsubscribe();
      const closeStarted = performance.now();
      await app.close();
      const closeMs = performance.now() - closeStarted;
      expect(client.inflightCount).toBe(0);
      expect(client.closed).toBe(true);
      await waitFor(() => proxy.openConnections === 0, {
        timeoutMs: 5_000,
        message: `connections still open after close: ${proxy.openConnections}`,
      });
      return { appRef, clientRef, peakHeap, closeMs };
    })();
    const after = await settledHeap(gc);
    // WeakRefs are only cleared after the job that created them: give GC a macrotask.
    await new Promise((resolve) => setTimeout(resolve, 0));
    gc();
    const appCollected = run.appRef.deref() === undefined;
    const clientCollected = run.clientRef.deref() === undefined;

    figures.push(
      `close=${run.closeMs.toFixed(0)} ms`,
      `heap baseline=${mb(baseline)} peak=${mb(run.peakHeap)} after close=${mb(after)} (Δ ${mb(after - baseline)})`,
      `app collected=${appCollected} client collected=${clientCollected}`,
    );
    // The app's whole object graph is gone (nothing global — timer, listener, static logger —
    // still holds it), and the heap is back near the baseline. What remains of the Δ is the
    // harness's own buffers (agent log capture, the proxy's request lines, fetch timings).
    expect(appCollected).toBe(true);
    expect(clientCollected).toBe(true);
    expect(after - baseline).toBeLessThan(HEAP_TOLERANCE_BYTES);
    // 200 registrations in waves plus 10,000 calls: ~35 s here, twice that on a loaded machine.
  }, 180_000);
});
