import type { TestingModule } from '@nestjs/testing';
import { DiscoveryService, ShardingService, type DiscoveryModuleOptions } from '../lib/index.js';
import {
  CapturingLogger,
  FAST_RETRY,
  startConsulAgent,
  startCountingProxy,
  stopAllAgents,
  TestApps,
  waitFor,
  type ConsulAgent,
  type CountingProxy,
} from './support/index.js';

// Exclusive sharding in-process on a real agent, under stalls, races and shutdown: a stall with
// acquisitions in flight, deregisterSelf() releasing before it deregisters, and a
// `consul.datacenter` naming another datacenter.
const P = 8;
const NAME = 'xshards';
const PREFIX = `athomic/sharding/${NAME}/`;

interface KvEntry {
  Key: string;
  Session?: string;
  LockIndex: number;
}

/** Blocks the whole process (every app in it, and the proxy) for `ms`. */
function stallEventLoop(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // busy: timers, sockets and heartbeats all wait
  }
}

describe('exclusive sharding on a real agent: stalls, deregistration, datacenters', () => {
  const apps = new TestApps();
  let agent: ConsulAgent;
  let proxy: CountingProxy;

  const options = (
    id: string,
    extra: Partial<DiscoveryModuleOptions> = {},
  ): DiscoveryModuleOptions => ({
    consul: { host: '127.0.0.1', port: proxy.port, timeoutMs: 2_000 },
    service: { name: NAME, id, address: '127.0.0.1', port: 4600 },
    // A lease of 1 s (ttl − 1 s), a pass every 200 ms.
    healthCheck: { ttl: '2s' },
    heartbeat: { intervalRatio: 0.1 },
    retry: { ...FAST_RETRY, failFast: true },
    shutdownTimeoutMs: 3_000,
    sharding: {
      partitions: P,
      mode: 'exclusive',
      settleMs: 50,
      drainTimeoutMs: 1_000,
      lock: { lockDelay: '15s' },
    },
    ...extra,
  });

  const keys = async (): Promise<KvEntry[]> => {
    const res = await agent.api().request('GET', `/v1/kv/${PREFIX}?recurse`);
    return res.status === 404 ? [] : (res.json as KvEntry[]);
  };

  /** Handlers that record each run (partition, token) and end when their signal aborts. */
  const runHandlers = (app: TestingModule) => {
    const runs: { p: number; token?: number; signal: AbortSignal }[] = [];
    app.get(ShardingService).onPartition(async (p, { signal, token }) => {
      runs.push({ p, token, signal });
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
    });
    return {
      runs,
      /** Partitions with a run going. */
      running: () => new Set(runs.filter((r) => !r.signal.aborted).map((r) => r.p)),
    };
  };

  beforeAll(async () => {
    agent = await startConsulAgent();
    proxy = await startCountingProxy(agent.httpPort);
  });
  afterEach(async () => {
    proxy.onRequest = undefined;
    await apps.closeAll();
  });
  afterAll(async () => {
    await proxy.close();
    await stopAllAgents();
  });

  it('no stranded lock: a stall past the lease with acquisitions in flight leaves every lock of the session owned and run', async () => {
    // b talks to the agent directly: only a's requests pass the proxy.
    const b = await apps.start({
      ...options(`${NAME}-b`),
      consul: { host: '127.0.0.1', port: agent.httpPort, timeoutMs: 2_000 },
    });
    const logger = new CapturingLogger();
    const a = await apps.start(options(`${NAME}-a`), logger);
    const sa = a.get(ShardingService);
    const handlers = runHandlers(a);
    const sb = b.get(ShardingService);
    await waitFor(() => sa.owned().length + sb.owned().length === P && sa.owned().length > 0, {
      timeoutMs: 10_000,
      message: 'a and b own every partition between them',
    });
    // b leaves: the table gives its partitions to a. Right after a's first acquisition is on the
    // wire, the event loop stalls past a's lease (1 s) but not past the TTL (2 s).
    let stalled = 0;
    proxy.onRequest = (request) => {
      if (stalled > 0 || request.method !== 'PUT' || !request.path.startsWith('/v1/txn')) return;
      stalled = performance.now();
      stallEventLoop(1_250);
    };
    await apps.close(b);
    await waitFor(() => stalled > 0, { timeoutMs: 10_000, message: 'a stalled while acquiring' });
    // Every lock the agent shows held is a's, owned by a and run by its handler; and a owns
    // every partition (nobody else is there to). a's side is read before and after the agent's
    // answer and must not have moved in between: a re-acquisition that lands while the keys are
    // read would pair an older key with a newer run.
    const sideOfA = () => {
      const owned = sa.owned();
      const tokens = owned.map((p) => sa.token(p));
      const running = handlers.running();
      const runs = handlers.runs.slice();
      const moment = JSON.stringify([owned, tokens, runs.length, [...running]]);
      return { owned, tokens, running, runs, moment };
    };
    let seen = '';
    const settled = await waitFor(
      async () => {
        const before = sideOfA();
        const held = (await keys()).filter((k) => k.Session);
        const side = sideOfA();
        if (before.moment !== side.moment) {
          seen = 'a changed while the keys were read';
          return undefined;
        }
        const partitions = held.map((k) => Number(k.Key.slice(PREFIX.length)));
        const stranded = partitions.filter((p) => !side.owned.includes(p) || !side.running.has(p));
        seen = `held ${partitions.join(',')}; owned ${side.owned.join(',')}; stranded ${stranded.join(',')}`;
        return stranded.length === 0 && held.length === P && side.owned.length === P
          ? { held, side }
          : undefined;
      },
      { timeoutMs: 15_000, message: "every lock held by a's session is owned and run by a" },
    ).catch((error: unknown) => {
      throw new Error(`${(error as Error).message}; last seen: ${seen}`);
    });
    const { held, side } = settled;
    expect(new Set(held.map((k) => k.Session)).size).toBe(1);
    // The stall did lapse the lease (the race this test is about happened).
    expect(logger.lines('warn').join('\n')).toMatch(/lease of "xshards-a" lapsed/);
    // Each partition's current run carries its key's LockIndex, newer than any earlier run's.
    for (const key of held) {
      const p = Number(key.Key.slice(PREFIX.length));
      const ofP = side.runs.filter((r) => r.p === p);
      expect(ofP.at(-1)!.token).toBe(key.LockIndex);
      expect(side.tokens[side.owned.indexOf(p)]).toBe(key.LockIndex);
      const tokens = ofP.map((r) => r.token!);
      expect(tokens).toEqual([...new Set(tokens)].sort((x, y) => x - y));
    }
  });

  it('deregisterSelf() drains and releases first (no lock-delay for the next owner); registerSelf() resumes', async () => {
    const a = await apps.start(options(`${NAME}-solo`));
    const sa = a.get(ShardingService);
    const discovery = a.get(DiscoveryService);
    const handlers = runHandlers(a);
    await waitFor(() => sa.owned().length === P, { timeoutMs: 10_000, message: 'a owns all' });
    const before = await keys();

    const deregistering = discovery.deregisterSelf();
    const atCall = { owned: sa.owned(), owns0: sa.owns(0) }; // false from the call on
    expect(await deregistering).toBe(true);
    expect(await agent.api().passingIds(NAME)).toEqual([]);

    // Released, not invalidated: another session takes a key at once (a lock-delay of 15 s
    // would refuse it).
    const created = await agent.api().request('PUT', '/v1/session/create', { Name: 'other' });
    const other = (created.json as { ID: string }).ID;
    const taken = await agent.api().request('PUT', `/v1/kv/${PREFIX}0?acquire=${other}`, 'x');
    expect(taken.json).toBe(true);
    expect((await keys()).filter((k) => k.Session && k.Session !== other)).toEqual([]);
    await agent.api().request('PUT', `/v1/kv/${PREFIX}0?release=${other}`, 'x');
    await agent.api().request('PUT', `/v1/session/destroy/${other}`);
    expect(atCall).toEqual({ owned: [], owns0: false });
    expect(handlers.running().size).toBe(0);

    // Registered again, a owns every partition again, each with a new token.
    expect(await discovery.registerSelf()).toBe(true);
    await waitFor(() => sa.owned().length === P, {
      timeoutMs: 10_000,
      message: 'a owns all again',
    });
    for (const key of before) {
      const p = Number(key.Key.slice(PREFIX.length));
      expect(sa.token(p)).toBeGreaterThan(key.LockIndex);
    }
  });

  it('after an agent restart, the instance that finds out first waits a lease before taking partitions: no two runs of one partition overlap', async () => {
    // A dev agent comes back empty: every session and lock is gone, and no lock-delay is left to
    // hold a freed key. b beats every 300 ms straight to the agent and finds out first; a goes
    // through the proxy, which holds its requests 1.5 s from the restart on, so a runs on
    // until its own heartbeat tells it (or its lease of 5 s lapses). b, seeing itself alone,
    // would take every partition at once — a's included.
    const runs: { app: string; p: number; from: number; to: number }[] = [];
    const record = (app: TestingModule, name: string) =>
      app.get(ShardingService).onPartition(async (p, { signal }) => {
        const run = { app: name, p, from: performance.now(), to: Infinity };
        runs.push(run);
        await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
        run.to = performance.now();
      });
    const a = await apps.start(options(`${NAME}-a`, { healthCheck: { ttl: '6s' } }));
    record(a, 'a');
    await waitFor(() => a.get(ShardingService).owned().length === P, {
      timeoutMs: 10_000,
      message: 'a owns all',
    });
    const b = await apps.start(
      options(`${NAME}-b`, {
        consul: { host: '127.0.0.1', port: agent.httpPort, timeoutMs: 2_000 },
        healthCheck: { ttl: '6s' },
        heartbeat: { intervalRatio: 0.05 },
      }),
    );
    record(b, 'b');
    const owned = () => [a, b].map((app) => app.get(ShardingService).owned().length);
    await waitFor(() => owned()[0] > 0 && owned()[1] > 0 && owned()[0] + owned()[1] === P, {
      timeoutMs: 15_000,
      message: 'a and b share the partitions',
    });

    proxy.requestDelayMs = 1_500;
    await agent.restart();
    const upAt = performance.now();
    await waitFor(() => runs.every((r) => r.app !== 'a' || r.to !== Infinity), {
      timeoutMs: 10_000,
      message: 'a let go of its partitions',
    });
    proxy.requestDelayMs = 0;
    // Both back, every partition run again through the new agent.
    await waitFor(
      () =>
        Array.from({ length: P }, (_, p) =>
          runs.some((r) => r.p === p && r.from > upAt && r.to === Infinity),
        ).every(Boolean),
      { timeoutMs: 30_000, message: 'every partition run again after the restart' },
    );
    const overlaps = runs.flatMap((r, i) =>
      runs
        .slice(i + 1)
        .filter((o) => o.p === r.p && o.app !== r.app && o.from < r.to && r.from < o.to)
        .map(
          (o) => `p${r.p}: ${r.app} until ${r.to.toFixed(0)}, ${o.app} from ${o.from.toFixed(0)}`,
        ),
    );
    expect(overlaps).toEqual([]);
  });

  it("consul.datacenter naming another datacenter: discovery reads go there, sharding's stay local", async () => {
    const a = await apps.start({
      ...options(`${NAME}-dc`),
      consul: { host: '127.0.0.1', port: proxy.port, timeoutMs: 2_000, datacenter: 'elsewhere' },
    });
    const sa = a.get(ShardingService);
    await waitFor(() => sa.owned().length === P, {
      timeoutMs: 10_000,
      message: 'a owns every partition through the local membership and locks',
    });
    expect(proxy.requests(/\/v1\/(health\/service|kv)\/[^ ]*dc=elsewhere/)).toEqual([]);
    // Discovery still reads the configured datacenter (unknown to this agent: refused).
    await expect(a.get(DiscoveryService).discover(NAME)).rejects.toThrow(/datacenter/i);
    expect(proxy.requests(/\/v1\/health\/service\/[^ ]*dc=elsewhere/).length).toBeGreaterThan(0);
  });
});
