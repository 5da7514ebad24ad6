import 'reflect-metadata';
import { ConsoleLogger } from '@nestjs/common';
import type { TestingModule } from '@nestjs/testing';
import type { Observable, Subscription } from 'rxjs';
import {
  DISCOVERY_PROVIDER,
  DiscoveryService,
  DiscoveryUnavailableError,
  type DiscoveryModuleOptions,
  type DiscoveryQuery,
  type ServiceDiscoveryProtocol,
  type ServiceInstance,
} from '../lib/index.js';
import {
  TestApps,
  delay,
  freePort,
  startConsulAgent,
  startCountingProxy,
  stopAllAgents,
  waitFor,
  type ConsulAgent,
  type CountingProxy,
} from './support/index.js';

// Live discovery (README "Behaviour" → "Live discovery") against one real Consul 1.8.7 dev agent: watch(), the watch
// cache behind discover()/snapshot()/freshness(), long-poll sharing and bounds, and what happens
// when the agent restarts or disappears. The library talks to the agent through counting proxies
// wherever requests or connections are counted. Tests that kill or restart the agent run last.

// Library logs (warnings during the outage tests) only when asked for: E2E_LOGS=1.
const logger = new ConsoleLogger({
  logLevels: process.env.E2E_LOGS ? ['log', 'warn', 'error'] : [],
});

let agent: ConsulAgent;
const apps = new TestApps(() => logger);
const proxies = new Set<CountingProxy>();
/** Measured latencies, printed at the end with E2E_TIMINGS=1 (for reports, not assertions). */
const timings: Record<string, number | string> = {};

beforeAll(async () => {
  agent = await startConsulAgent();
});

afterEach(async () => {
  await apps.closeAll();
  await Promise.all([...proxies].map((proxy) => proxy.close()));
  proxies.clear();
});

afterAll(async () => {
  await stopAllAgents();
  if (process.env.E2E_TIMINGS) {
    process.stdout.write(`watch.e2e timings: ${JSON.stringify(timings, null, 1)}\n`);
  }
});

// ---------------------------------------------------------------------------------------------
// helpers

async function proxy(): Promise<CountingProxy> {
  const p = await startCountingProxy(agent.httpPort);
  proxies.add(p);
  return p;
}

interface App {
  module: TestingModule;
  discovery: DiscoveryService;
  provider: ServiceDiscoveryProtocol;
  close(): Promise<void>;
}

/** A watcher-side app (no self-registration unless `service` is given), talking to `port`. */
async function createApp(port: number, extra: DiscoveryModuleOptions = {}): Promise<App> {
  const options: DiscoveryModuleOptions = {
    autoRegister: false,
    ...extra,
    consul: { host: '127.0.0.1', port, timeoutMs: 2_000, ...extra.consul },
    retry: { maxAttempts: 2, initialDelayMs: 50, maxDelayMs: 400, ...extra.retry },
  };
  const module = await apps.start(options);
  return {
    module,
    discovery: module.get(DiscoveryService),
    provider: module.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER),
    close: () => apps.close(module),
  };
}

/** Everything a subscriber received. */
interface Recorder {
  values: string[][];
  errors: unknown[];
  completed: boolean;
  subscription: Subscription;
  last(): string[] | undefined;
}

function record(source: Observable<ServiceInstance[]>): Recorder {
  const rec: Recorder = {
    values: [],
    errors: [],
    completed: false,
    subscription: undefined as unknown as Subscription,
    last: () => rec.values.at(-1),
  };
  rec.subscription = source.subscribe({
    next: (set) => rec.values.push(ids(set)),
    error: (error: unknown) => rec.errors.push(error),
    complete: () => (rec.completed = true),
  });
  return rec;
}

const ids = (set: readonly ServiceInstance[]): string[] => set.map((i) => i.serviceId);
const same = (a: readonly string[] | undefined, b: readonly string[]): boolean =>
  a !== undefined && a.length === b.length && a.every((x, i) => x === b[i]);

/** Registers an instance through the raw API with a passing TTL check (`service:<id>`). */
async function registerRaw(name: string, id: string, tags: string[] = []): Promise<void> {
  await agent.api().registerService({
    Name: name,
    ID: id,
    Address: '127.0.0.1',
    Port: 9000,
    Tags: tags,
    Check: { TTL: '120s', Status: 'passing' },
  });
}

/** The agent's own view (raw API, not the library): ids of the passing instances of `name`. */
/**
 * Waits (≤ 1 s from the moment the agent acknowledged the change) until every watch recorder
 * and both discover() paths show `expected`; returns the elapsed ms.
 */
async function within1s(
  what: string,
  app: App,
  name: string,
  expected: string[],
  recorders: Recorder[],
  query?: DiscoveryQuery,
): Promise<number> {
  const started = performance.now();
  await waitFor(
    async () => {
      if (!recorders.every((r) => same(r.last(), expected))) return false;
      const [fromService, fromProvider] = await Promise.all([
        app.discovery.discover(name, query),
        app.provider.discover(name, query),
      ]);
      return same(ids(fromService), expected) && same(ids(fromProvider), expected);
    },
    {
      timeoutMs: 1_000,
      intervalMs: 5,
      message: `${what}: watch + discover() should show ${JSON.stringify(expected)} within 1 s (watch saw ${JSON.stringify(recorders.map((r) => r.values))})`,
    },
  );
  const elapsed = Math.round(performance.now() - started);
  timings[what] = elapsed;
  return elapsed;
}

/** Long-poll request lines (`index=`) for `/v1/health/service/<name>`, optionally with a tag. */
/**
 * The long-poll of `name` was re-armed exactly once since `before` requests, i.e. woken by the
 * last change only: waits for the re-arm carrying the agent's current index (the one after that
 * change), then counts. An earlier, spurious wake would show up as one more re-arm.
 */
async function expectWokenOnce(p: CountingProxy, name: string, before: number): Promise<void> {
  const res = await fetch(`${agent.baseUrl}/v1/health/service/${name}`);
  await res.body?.cancel();
  const current = Number(res.headers.get('x-consul-index'));
  const indexOf = (line: string): number => Number(/[?&]index=(\d+)/.exec(line)?.[1] ?? 0);
  await waitFor(() => longPolls(p, name).some((line) => indexOf(line) >= current), {
    timeoutMs: 1_000,
    message: `the long-poll should be re-armed at index ${current}`,
  });
  expect(longPolls(p, name).length).toBe(before + 1);
}

function longPolls(p: CountingProxy, name: string, tag?: string): string[] {
  return p
    .requests(`/v1/health/service/${name}?`)
    .filter((line) => line.includes('index='))
    .filter((line) => (tag === undefined ? !line.includes('tag=') : line.includes(`tag=${tag}`)));
}

// ---------------------------------------------------------------------------------------------

describe('DiscoveryService.watch (live discovery, real Consul)', () => {
  it('emits the current set at once, then every real change, to watch() and both discover()s within 1 s', async () => {
    const name = 'live-a';
    await registerRaw(name, 'live-a-1');
    const p = await proxy();
    const app = await createApp(p.port);

    const first = record(app.discovery.watch(name));
    await waitFor(() => same(first.last(), ['live-a-1']), {
      timeoutMs: 1_000,
      intervalMs: 5,
      message: 'first subscriber should get the current set',
    });
    expect(first.values).toEqual([['live-a-1']]);
    // A later subscriber gets the known set synchronously, during subscribe().
    const second = record(app.discovery.watch(name));
    expect(second.values).toEqual([['live-a-1']]);
    const subs = [first, second];

    await registerRaw(name, 'live-a-2');
    await within1s('second instance registers', app, name, ['live-a-1', 'live-a-2'], subs);

    await agent.api().failTtl('service:live-a-1', 'down');
    await within1s('check goes critical', app, name, ['live-a-2'], subs);

    await agent.api().passTtl('service:live-a-1', 'up');
    await within1s('check recovers', app, name, ['live-a-1', 'live-a-2'], subs);

    await agent.api().deregisterService('live-a-2');
    await within1s('instance deregisters', app, name, ['live-a-1'], subs);

    const expectedHistory = [
      ['live-a-1'],
      ['live-a-1', 'live-a-2'],
      ['live-a-2'],
      ['live-a-1', 'live-a-2'],
      ['live-a-1'],
    ];
    expect(first.values).toEqual(expectedHistory);
    expect(second.values).toEqual(expectedHistory);

    // Each of the 4 changes woke the one long-poll, which was re-armed once (1 + 4 polls).
    await waitFor(() => longPolls(p, name).length >= 5, {
      timeoutMs: 1_000,
      message: 'the long-poll should be re-armed after the last change',
    });

    // Same-status pass: re-pass the passing TTL check. The agent has processed it once its
    // check reads back with the new note. Then a real change (a sentinel) follows: the watch
    // must show the sentinel's set right after the last one, and the long-poll must have been
    // woken once (by the sentinel), not twice — no fixed quiet window needed.
    let polls = longPolls(p, name).length;
    await agent.api().passTtl('service:live-a-1', 'still up');
    expect((await agent.api().agentChecks())['service:live-a-1']).toMatchObject({
      Status: 'passing',
      Output: 'still up',
    });
    await registerRaw(name, 'live-a-3');
    await within1s('sentinel after a same-status pass', app, name, ['live-a-1', 'live-a-3'], subs);
    expectedHistory.push(['live-a-1', 'live-a-3']);
    expect(first.values).toEqual(expectedHistory);
    expect(second.values).toEqual(expectedHistory);
    await expectWokenOnce(p, name, polls);

    // An unrelated service registers, flips critical and leaves (read back from the agent).
    polls = longPolls(p, name).length;
    await registerRaw('live-unrelated', 'live-unrelated-1');
    await agent.api().failTtl('service:live-unrelated-1', 'down');
    expect(await agent.api().passingIds('live-unrelated')).toEqual([]);
    await agent.api().deregisterService('live-unrelated-1');
    expect(await agent.api().agentServices()).not.toHaveProperty('live-unrelated-1');
    // The same sentinel check: the next emission is the sentinel's, and the long-poll was
    // neither aborted nor re-created because something else changed (woken once, by it).
    await agent.api().deregisterService('live-a-3');
    await within1s('sentinel after unrelated changes', app, name, ['live-a-1'], subs);
    expectedHistory.push(['live-a-1']);
    expect(first.values).toEqual(expectedHistory);
    expect(second.values).toEqual(expectedHistory);
    await expectWokenOnce(p, name, polls);
    expect([...first.errors, ...second.errors]).toEqual([]);

    first.subscription.unsubscribe();
    second.subscription.unsubscribe();
    await app.close();
  });

  it('serves discover() from the watch (no request across 1,000 calls); snapshot() and freshness()', async () => {
    const name = 'cached-b';
    await registerRaw(name, 'cached-b-1');
    await registerRaw(name, 'cached-b-2');
    const p = await proxy();
    const app = await createApp(p.port);

    expect(app.discovery.snapshot(name)).toBeUndefined();
    expect(app.discovery.freshness(name)).toBeUndefined();
    const rec = record(app.discovery.watch(name));
    await waitFor(() => same(rec.last(), ['cached-b-1', 'cached-b-2']), {
      timeoutMs: 1_000,
      message: 'watch should emit the current set',
    });

    const linesBefore = p.requestLines.length;
    const connectionsBefore = p.totalConnections;
    const started = performance.now();
    for (let i = 0; i < 1_000; i++) {
      const fromService = await app.discovery.discover(name);
      const fromProvider = await app.provider.discover(name);
      if (i === 0 || i === 999) {
        expect(ids(fromService)).toEqual(['cached-b-1', 'cached-b-2']);
        expect(fromProvider).toEqual(fromService);
      }
    }
    timings['1000 × 2 cached discover() ms'] = Math.round(performance.now() - started);
    expect(p.requestLines.slice(linesBefore)).toEqual([]);
    expect(p.totalConnections).toBe(connectionsBefore);

    // The same set as the watch and as the agent itself.
    const watched = await app.discovery.discover(name);
    expect(ids(watched)).toEqual(rec.last());
    expect(ids(watched)).toEqual(await agent.api().passingIds(name));
    expect(watched[0]).toMatchObject({ name, address: '127.0.0.1', port: 9000 });

    // snapshot(): synchronous, a copy, undefined for an unwatched name (or another query).
    const snap = app.discovery.snapshot(name);
    expect(snap).toEqual(watched);
    expect(app.discovery.snapshot('cached-unwatched')).toBeUndefined();
    expect(app.discovery.snapshot(name, { tag: 'x' })).toBeUndefined();

    const fresh = app.discovery.freshness(name);
    expect(fresh?.stale).toBe(false);
    expect(fresh?.updatedAt).toBeInstanceOf(Date);
    expect(Date.now() - fresh!.updatedAt.getTime()).toBeLessThan(60_000);
    expect(app.discovery.freshness('cached-unwatched')).toBeUndefined();

    // Control: an unwatched name does go to the agent (so the proxy would have seen the above).
    const linesBeforeControl = p.requestLines.length;
    expect(await app.discovery.discover('cached-unwatched')).toEqual([]);
    expect(p.requests('/v1/health/service/cached-unwatched?').length).toBe(1);
    expect(p.requestLines.length).toBe(linesBeforeControl + 1);

    rec.subscription.unsubscribe();
    expect(app.discovery.snapshot(name)).toBeUndefined();
    expect(rec.errors).toEqual([]);
    await app.close();
  });

  it('20 subscribers share one long-poll; the last unsubscribe leaves it open (never aborted); a subscriber coming back reuses it', async () => {
    const name = 'shared-c';
    await registerRaw(name, 'shared-c-1');
    const p = await proxy();
    // Default watch.waitTime (60 s): the agent itself would hold the poll for a minute.
    const app = await createApp(p.port);

    const subs = Array.from({ length: 20 }, () => record(app.discovery.watch(name)));
    await waitFor(() => longPolls(p, name).length === 1, {
      timeoutMs: 2_000,
      message: 'the long-poll should be open',
    });
    expect(subs.every((s) => same(s.last(), ['shared-c-1']))).toBe(true);
    // Exactly one read for the name (index 0) and one long-poll, on one connection.
    expect(p.requests(`/v1/health/service/${name}?`)).toHaveLength(2);
    expect(longPolls(p, name)).toHaveLength(1);
    expect(p.openConnections).toBe(1);

    // A change wakes the one long-poll, every subscriber gets it, and one new poll follows.
    await registerRaw(name, 'shared-c-2');
    await within1s('change with 20 subscribers', app, name, ['shared-c-1', 'shared-c-2'], subs);
    await waitFor(() => longPolls(p, name).length === 2, {
      timeoutMs: 1_000,
      message: 'one new long-poll after the wake-up',
    });
    expect(p.openConnections).toBe(1);

    for (const s of subs.slice(1)) s.subscription.unsubscribe();
    expect(app.discovery.snapshot(name)).toEqual(await app.discovery.discover(name));
    expect(p.openConnections).toBe(1);

    // The last unsubscribe does not abort the poll: a 1.8 agent would hold an aborted one for
    // its whole wait (60 s) anyway. It is left to end by itself (watch-edges.e2e-spec.ts).
    subs[0].subscription.unsubscribe();
    expect(app.discovery.snapshot(name)).toBeUndefined();
    expect(p.openConnections).toBe(1);
    expect(p.abandonedConnections).toBe(0);

    // A subscriber coming back meanwhile reuses it: the set at once, no new request.
    const again = record(app.discovery.watch(name));
    expect(again.last()).toEqual(['shared-c-1', 'shared-c-2']);
    expect(longPolls(p, name)).toHaveLength(2);
    expect(p.requests(`/v1/health/service/${name}?`)).toHaveLength(3);
    // And it still follows changes.
    await registerRaw(name, 'shared-c-3');
    await within1s(
      'change after reuse',
      app,
      name,
      ['shared-c-1', 'shared-c-2', 'shared-c-3'],
      [again],
    );
    expect(p.openConnections).toBe(1);
    expect(subs.flatMap((s) => s.errors)).toEqual([]);
    again.subscription.unsubscribe();
    await app.close();
  });

  it('a { tag } watch only emits tagged instances and is its own long-poll', async () => {
    const name = 'tagged-d';
    await registerRaw(name, 'tagged-d-1', ['blue']);
    await registerRaw(name, 'tagged-d-2', ['green']);
    const p = await proxy();
    const app = await createApp(p.port);

    const blue = record(app.discovery.watch(name, { tag: 'blue' }));
    const all = record(app.discovery.watch(name));
    await waitFor(
      () =>
        same(blue.last(), ['tagged-d-1']) &&
        same(all.last(), ['tagged-d-1', 'tagged-d-2']) &&
        longPolls(p, name, 'blue').length === 1 &&
        longPolls(p, name).length === 1,
      { timeoutMs: 2_000, message: 'both long-polls should be open with their sets' },
    );
    expect(p.openConnections).toBe(2);
    expect(app.discovery.snapshot(name, { tag: 'blue' })?.map((i) => i.serviceId)).toEqual([
      'tagged-d-1',
    ]);
    expect(app.discovery.snapshot(name)?.map((i) => i.serviceId)).toEqual([
      'tagged-d-1',
      'tagged-d-2',
    ]);

    await registerRaw(name, 'tagged-d-3', ['blue', 'green']);
    await within1s('tagged instance registers', app, name, ['tagged-d-1', 'tagged-d-3'], [blue], {
      tag: 'blue',
    });
    await within1s(
      'tagged instance, plain watch',
      app,
      name,
      ['tagged-d-1', 'tagged-d-2', 'tagged-d-3'],
      [all],
    );

    // An untagged change: the plain watch shows it (the agent processed it and woke both polls);
    // the tag watch, whose set did not change, stays silent: a blue sentinel registered next is
    // the very next thing it emits.
    const blueCount = blue.values.length;
    await registerRaw(name, 'tagged-d-4', ['green']);
    await within1s(
      'untagged instance, plain watch',
      app,
      name,
      ['tagged-d-1', 'tagged-d-2', 'tagged-d-3', 'tagged-d-4'],
      [all],
    );
    const blueBefore = ids(await app.discovery.discover(name, { tag: 'blue' }));
    await registerRaw(name, 'tagged-d-5', ['blue']);
    await waitFor(() => blue.values.length > blueCount, {
      timeoutMs: 1_000,
      message: 'the tag watch should emit the blue sentinel',
    });
    expect(blue.values).toHaveLength(blueCount + 1);
    expect(blue.values.at(-1)).toEqual([...blueBefore, 'tagged-d-5'].sort());
    expect(ids(await app.discovery.discover(name, { tag: 'blue' }))).toEqual(
      await agent.api().passingIds(name, { tag: 'blue' }),
    );
    expect(longPolls(p, name, 'green')).toEqual([]);

    blue.subscription.unsubscribe();
    all.subscription.unsubscribe();
    expect([...blue.errors, ...all.errors]).toEqual([]);
    await app.close();
  });

  it('watch.services pre-warms: snapshot() is defined after init without any subscriber', async () => {
    await registerRaw('warm-e', 'warm-e-1');
    const app = await createApp(agent.httpPort, { watch: { services: ['warm-e', 'warm-empty'] } });
    const started = performance.now();
    const snap = await waitFor(() => app.discovery.snapshot('warm-e'), {
      timeoutMs: 1_000,
      intervalMs: 5,
      message: 'pre-warmed snapshot should appear',
    });
    timings['pre-warm snapshot after init ms'] = Math.round(performance.now() - started);
    expect(ids(snap)).toEqual(['warm-e-1']);
    await waitFor(() => app.discovery.snapshot('warm-empty'), {
      timeoutMs: 1_000,
      message: 'a pre-warmed name without instances should be known as []',
    });
    expect(app.discovery.snapshot('warm-empty')).toEqual([]);
    expect(app.discovery.freshness('warm-e')?.stale).toBe(false);
    expect(app.discovery.snapshot('warm-other')).toBeUndefined();

    // It stays live without a subscriber.
    await registerRaw('warm-e', 'warm-e-2');
    await within1s('pre-warmed change', app, 'warm-e', ['warm-e-1', 'warm-e-2'], []);
    await app.close();
  });

  it('watch.maxLongPolls: 2 with 5 names: 2 per-name long-polls + the shared feed; overflow names still update within 1 s', async () => {
    const names = ['cap-1', 'cap-2', 'cap-3', 'cap-4', 'cap-5'];
    for (const n of names) await registerRaw(n, `${n}-a`);
    const p = await proxy();
    const app = await createApp(p.port, { watch: { maxLongPolls: 2 } });

    const recs = names.map((n) => record(app.discovery.watch(n)));
    const feedPolls = (): string[] =>
      p
        .requests(/\/v1\/(health\/state\/any|catalog\/services)\?/)
        .filter((l) => l.includes('index='));
    await waitFor(
      () =>
        recs.every((r, i) => same(r.last(), [`${names[i]}-a`])) &&
        longPolls(p, 'cap-1').length === 1 &&
        longPolls(p, 'cap-2').length === 1 &&
        feedPolls().length === 2,
      {
        timeoutMs: 2_000,
        message: 'all 5 sets known, 2 per-name polls and 2 feed polls open',
      },
    );
    // The names beyond the first two are never long-polled on their own.
    for (const n of names.slice(2)) expect(longPolls(p, n)).toEqual([]);
    expect(p.requests(/\/v1\/health\/state\/any\?.*index=/)).toHaveLength(1);
    expect(p.requests(/\/v1\/catalog\/services\?.*index=/)).toHaveLength(1);
    const idleOpen = p.openConnections;
    timings['maxLongPolls=2, 5 names: open connections'] = idleOpen;
    // 4 long-polls; at most the overflow names' start-up reads left idle keep-alive sockets.
    expect(idleOpen).toBeGreaterThanOrEqual(4);
    expect(idleOpen).toBeLessThanOrEqual(4 + 3);

    // A new instance of a feed-mode name, then a check flip of another one.
    await registerRaw('cap-5', 'cap-5-b');
    await within1s('overflow name: new instance', app, 'cap-5', ['cap-5-a', 'cap-5-b'], [recs[4]]);
    await agent.api().failTtl('service:cap-4-a', 'down');
    await within1s('overflow name: check critical', app, 'cap-4', [], [recs[3]]);
    await agent.api().passTtl('service:cap-4-a', 'up');
    await within1s('overflow name: check recovers', app, 'cap-4', ['cap-4-a'], [recs[3]]);
    // A long-polled name still works too.
    await registerRaw('cap-1', 'cap-1-b');
    await within1s('long-polled name under cap', app, 'cap-1', ['cap-1-a', 'cap-1-b'], [recs[0]]);

    // Still bounded: no per-name long-poll for the overflow names, connections not grown.
    for (const n of names.slice(2)) expect(longPolls(p, n)).toEqual([]);
    expect(p.openConnections).toBeLessThanOrEqual(idleOpen);
    // cap-3 never changed and was not re-announced.
    expect(recs[2].values).toEqual([['cap-3-a']]);
    expect(recs.flatMap((r) => r.errors)).toEqual([]);

    for (const r of recs) r.subscription.unsubscribe();
    await app.close();
  });

  it('beyond maxLongPolls, connections stay bounded however many names are watched (30 names)', async () => {
    // README "Connection bound": long-polls ≤ maxLongPolls (+ the feed's 2 per datacenter); every other
    // read goes through the capped pool (consul.maxSockets). So connections ≤ 2 + 2 + 4 here.
    const names = Array.from({ length: 30 }, (_, i) => `many-${i}`);
    for (const n of names.slice(0, 5)) await registerRaw(n, `${n}-a`);
    const p = await proxy();
    const maxSockets = 4;
    const app = await createApp(p.port, {
      consul: { maxSockets },
      watch: { maxLongPolls: 2 },
    });
    let peak = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, p.openConnections)), 1);
    try {
      const recs = names.map((n) => record(app.discovery.watch(n)));
      await waitFor(() => recs.every((r) => r.last() !== undefined), {
        timeoutMs: 3_000,
        message: 'all 30 sets should be known',
      });
      expect(recs[0].last()).toEqual(['many-0-a']);
      expect(recs[29].last()).toEqual([]);
      // One change to an overflow name still arrives, re-reading that name only, not all 28.
      const before = p.requests('/v1/health/service/').length;
      await registerRaw('many-20', 'many-20-a');
      await within1s('30 names: overflow change', app, 'many-20', ['many-20-a'], [recs[20]]);
      await waitFor(() => p.requests('index=').length >= 4, {
        timeoutMs: 1_000,
        message: 'feed polls re-armed',
      });
      const rereads = p
        .requests('/v1/health/service/')
        .slice(before)
        .filter((l) => !l.includes('index='));
      // Only the changed name is re-read: once per feed that saw it (new check, new name).
      expect(new Set(rereads)).toEqual(
        new Set(['GET /v1/health/service/many-20?passing=true HTTP/1.1']),
      );
      expect(rereads.length).toBeLessThanOrEqual(2);
      Object.assign(timings, {
        '30 names: peak open connections': peak,
        '30 names: connections opened': p.totalConnections,
      });
      const bound = 2 + 2 + maxSockets;
      expect(peak).toBeLessThanOrEqual(bound);
      expect(p.totalConnections).toBeLessThanOrEqual(bound);
      for (const r of recs) r.subscription.unsubscribe();
    } finally {
      clearInterval(sampler);
    }
    await app.close();
  });

  it('after app.close() every connection the library opened is closed within shutdownTimeoutMs', async () => {
    await registerRaw('close-f', 'close-f-1');
    await registerRaw('close-g', 'close-g-1');
    const p = await proxy();
    const shutdownTimeoutMs = 2_000;
    const app = await createApp(p.port, {
      autoRegister: true,
      service: { name: 'close-self', id: 'close-self-1', address: '127.0.0.1', port: 7010 },
      shutdownTimeoutMs,
      // One own long-poll, one name on the shared feed: every kind of connection.
      watch: { maxLongPolls: 1, services: ['close-f'] },
    });
    const rec = record(app.discovery.watch('close-g'));
    await waitFor(
      () =>
        app.discovery.snapshot('close-f') !== undefined &&
        same(rec.last(), ['close-g-1']) &&
        p.requests('index=').length >= 3,
      { timeoutMs: 2_000, message: 'poll + feed should be running' },
    );
    // A short call on the other pool, leaving an idle keep-alive socket behind.
    expect(await app.provider.discover('close-unwatched')).toEqual([]);
    expect(await agent.api().passingIds('close-self')).toEqual(['close-self-1']);
    expect(p.openConnections).toBeGreaterThanOrEqual(4);
    timings['open connections before close'] = p.openConnections;

    const started = performance.now();
    await app.close();
    timings['app.close() ms'] = Math.round(performance.now() - started);
    await waitFor(() => p.openConnections === 0, {
      timeoutMs: Math.max(1, shutdownTimeoutMs - (performance.now() - started)),
      intervalMs: 5,
      message: `proxy should see every connection closed (open: ${p.openConnections})`,
    });
    timings['close → 0 open connections ms'] = Math.round(performance.now() - started);
    expect(rec.errors).toEqual([]);
    expect(await agent.api().passingIds('close-self')).toEqual([]);
  });

  it('Consul unreachable: an unwatched discover() rejects with DiscoveryUnavailableError; a watch of it stays silent', async () => {
    // Nothing listens behind this proxy: every connection is reset (a transport failure).
    const p = await startCountingProxy(await freePort());
    proxies.add(p);
    const app = await createApp(p.port);
    await expect(app.discovery.discover('never-seen')).rejects.toBeInstanceOf(
      DiscoveryUnavailableError,
    );
    await expect(app.provider.discover('never-seen')).rejects.toBeInstanceOf(
      DiscoveryUnavailableError,
    );
    // A watch of a name never seen has nothing to serve: no snapshot, nothing emitted, and no
    // error to the subscriber while it backs off and retries (3 attempts seen at the proxy).
    const connections = p.totalConnections;
    const rec = record(app.discovery.watch('never-seen'));
    await waitFor(() => p.totalConnections >= connections + 3, {
      timeoutMs: 3_000,
      message: 'the watch should keep retrying',
    });
    expect(app.discovery.snapshot('never-seen')).toBeUndefined();
    expect(rec.values).toEqual([]);
    expect(rec.errors).toEqual([]);
    rec.subscription.unsubscribe();
    await app.close();
  });

  // ----- the agent goes away: these run last (a dev agent comes back empty) -------------------

  it('agent restart: the set vanishes and comes back (heartbeat re-registers), no error, no tight loop', async () => {
    const name = 'restart-h';
    const p = await proxy();
    const initialDelayMs = 50;
    const app = await createApp(p.port, {
      autoRegister: true,
      service: { name, id: 'restart-h-1', address: '127.0.0.1', port: 7020 },
      // Heartbeat every 3 s (9 s × 1/3): after the restart, the first beat gets 1.8's
      // "does not have associated TTL" and re-registers the instance.
      healthCheck: { ttl: '9s' },
      retry: { initialDelayMs, maxDelayMs: 400 },
    });
    const rec = record(app.discovery.watch(name));
    await waitFor(() => same(rec.last(), ['restart-h-1']), {
      timeoutMs: 1_000,
      message: 'own registration should be watched',
    });

    // Restart right after a heartbeat, so the watch (backoff ≤ 400 ms) reads the empty agent
    // well before the next beat (≈3 s later) re-registers: the vanish is then observable.
    // The proxy misses the request line that follows a request with a body on the same
    // keep-alive socket (the body's tail is glued to it), so the first pass after the register
    // PUT is not logged: wait for a logged one, up to three periods.
    const passes = (): number => p.requests(/\/v1\/agent\/check\/pass\//).length;
    const beats = passes();
    await waitFor(() => passes() > beats, {
      timeoutMs: 10_000,
      intervalMs: 5,
      message: `a heartbeat should pass (${JSON.stringify(p.requestLines)})`,
    });
    const seen = rec.values.length;
    const linesBefore = p.requestLines.length;
    const connectionsBefore = p.totalConnections;
    const started = performance.now();
    await agent.restart();
    const outageMs = performance.now() - started;
    const watchRequests = p.requestLines
      .slice(linesBefore)
      .filter((l) => l.includes(`/v1/health/service/${name}?`)).length;
    const connections = p.totalConnections - connectionsBefore;
    Object.assign(timings, {
      'restart outage ms': Math.round(outageMs),
      'restart: watch requests during outage': watchRequests,
      'restart: connections during outage': connections,
    });
    // No tight loop: the broken long-poll is retried once at once (a reset keep-alive socket),
    // then attempts back off from initialDelayMs with full jitter, where a delay may come out
    // near 0 — so allow twice the mean pace: ≤ 4 + 2 × outage / initialDelayMs. A tight loop
    // would be hundreds. The restart happens right after a heartbeat, so the next beat falls
    // after the outage.
    const bound = 4 + 2 * Math.ceil(outageMs / initialDelayMs);
    expect(watchRequests).toBeLessThanOrEqual(bound);
    expect(connections).toBeLessThanOrEqual(bound);

    const vanished = performance.now();
    await waitFor(() => rec.values.slice(seen).some((v) => v.length === 0), {
      timeoutMs: 3_000,
      intervalMs: 5,
      message: `subscribers should see the set vanish (saw ${JSON.stringify(rec.values)})`,
    });
    timings['restart: agent up → empty set ms'] = Math.round(performance.now() - vanished);
    await waitFor(() => same(rec.last(), ['restart-h-1']), {
      timeoutMs: 8_000,
      intervalMs: 5,
      message: `subscribers should see the instance come back (saw ${JSON.stringify(rec.values)})`,
    });
    timings['restart: agent up → set back ms'] = Math.round(performance.now() - vanished);
    expect(await agent.api().passingIds(name)).toEqual(['restart-h-1']);
    expect(rec.values.slice(seen)).toEqual([[], ['restart-h-1']]);
    expect(ids(await app.provider.discover(name))).toEqual(['restart-h-1']);
    expect(app.discovery.freshness(name)?.stale).toBe(false);
    expect(rec.errors).toEqual([]);
    expect(rec.completed).toBe(false);

    rec.subscription.unsubscribe();
    await app.close();
  });

  it('Consul unreachable: discover() keeps the last known set, freshness turns stale, then fresh again', async () => {
    const name = 'outage-i';
    await registerRaw(name, 'outage-i-1');
    const p = await proxy();
    const initialDelayMs = 50;
    const app = await createApp(p.port, { retry: { initialDelayMs, maxDelayMs: 400 } });
    const rec = record(app.discovery.watch(name));
    await waitFor(() => same(rec.last(), ['outage-i-1']), {
      timeoutMs: 1_000,
      message: 'watch should emit the current set',
    });
    const confirmedAt = app.discovery.freshness(name)!.updatedAt;

    await agent.kill();
    const down = performance.now();
    const linesBefore = p.requestLines.length;
    const connectionsBefore = p.totalConnections;
    await waitFor(() => app.discovery.freshness(name)?.stale === true, {
      timeoutMs: 2_000,
      intervalMs: 5,
      message: 'freshness should turn stale once the agent is gone',
    });
    timings['kill → stale ms'] = Math.round(performance.now() - down);
    expect(app.discovery.freshness(name)?.updatedAt).toEqual(confirmedAt);
    expect(ids(await app.discovery.discover(name))).toEqual(['outage-i-1']);
    expect(ids(await app.provider.discover(name))).toEqual(['outage-i-1']);
    expect(ids(app.discovery.snapshot(name) ?? [])).toEqual(['outage-i-1']);

    // A 2 s window of outage is what the attempt counts below are measured over (a rate, so a
    // fixed window is the measurement itself, not a proof that something did not happen).
    await delay(2_000);
    const outageMs = performance.now() - down;
    const attempts = p.totalConnections - connectionsBefore;
    const watchRequests = p.requestLines
      .slice(linesBefore)
      .filter((l) => l.includes(`/v1/health/service/${name}?`)).length;
    Object.assign(timings, {
      'kill: outage ms': Math.round(outageMs),
      'kill: connections during outage': attempts,
      'kill: watch requests during outage': watchRequests,
    });
    // The broken long-poll is retried once at once, then backoff from initialDelayMs.
    expect(attempts).toBeLessThanOrEqual(2 + Math.ceil(outageMs / initialDelayMs));
    expect(watchRequests).toBeLessThanOrEqual(2 + Math.ceil(outageMs / initialDelayMs));
    expect(attempts).toBeGreaterThan(0); // it does keep trying
    expect(ids(await app.discovery.discover(name))).toEqual(['outage-i-1']);
    expect(app.discovery.freshness(name)?.stale).toBe(true);
    expect(rec.errors).toEqual([]);

    await agent.start();
    const up = performance.now();
    await waitFor(() => app.discovery.freshness(name)?.stale === false, {
      timeoutMs: 2_000,
      intervalMs: 5,
      message: 'freshness should be fresh again once the agent is back',
    });
    timings['agent back → fresh ms'] = Math.round(performance.now() - up);
    expect(app.discovery.freshness(name)!.updatedAt.getTime()).toBeGreaterThan(
      confirmedAt.getTime(),
    );
    // The dev agent came back empty, and the watch says so; a new registration shows up live.
    await waitFor(() => same(rec.last(), []), {
      timeoutMs: 1_000,
      message: 'the empty agent should be reflected',
    });
    await registerRaw(name, 'outage-i-1');
    await within1s('after outage: instance registers', app, name, ['outage-i-1'], [rec]);
    expect(rec.errors).toEqual([]);
    expect(rec.completed).toBe(false);

    rec.subscription.unsubscribe();
    await app.close();
  });
});
