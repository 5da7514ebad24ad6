import 'reflect-metadata';
import type { Subscription } from 'rxjs';
import {
  DiscoveryService,
  type DiscoveryModuleOptions,
  type ServiceInstance,
} from '../lib/index.js';
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

// Live discovery under churn and at the edges (README "Behaviour" → "Live discovery")
// against one real Consul 1.8.7 agent: names served by the shared change feed (beyond
// watch.maxLongPolls) see what a long-poll of their own would see, and subscribers coming and
// going keep the connections the agent holds for this client within the documented bound.

let agent: ConsulAgent;
const apps = new TestApps(() => new CapturingLogger());
const proxies = new Set<CountingProxy>();
const subscriptions = new Set<Subscription>();

beforeAll(async () => {
  agent = await startConsulAgent();
});

afterEach(async () => {
  for (const s of subscriptions) s.unsubscribe();
  subscriptions.clear();
  await apps.closeAll();
  await Promise.all([...proxies].map((p) => p.close()));
  proxies.clear();
});

afterAll(stopAllAgents);

async function proxy(): Promise<CountingProxy> {
  const p = await startCountingProxy(agent.httpPort);
  proxies.add(p);
  return p;
}

async function createApp(port: number, extra: DiscoveryModuleOptions = {}) {
  const module = await apps.start({
    autoRegister: false,
    ...extra,
    consul: { host: '127.0.0.1', port, timeoutMs: 2_000, ...extra.consul },
    retry: { maxAttempts: 2, initialDelayMs: 50, maxDelayMs: 400 },
  });
  return module.get(DiscoveryService);
}

interface Registered {
  name: string;
  id: string;
  port?: number;
  address?: string;
  tags?: string[];
  meta?: Record<string, string>;
}

async function registerRaw(r: Registered): Promise<void> {
  await agent.api().registerService({
    Name: r.name,
    ID: r.id,
    Address: r.address ?? '127.0.0.1',
    Port: r.port ?? 9000,
    Tags: r.tags ?? [],
    Meta: r.meta ?? {},
    Check: { TTL: '120s', Status: 'passing' },
  });
}

/** Subscribes and keeps the last set seen. */
function watchLast(discovery: DiscoveryService, name: string) {
  const seen: { last?: ServiceInstance[] } = {};
  subscriptions.add(discovery.watch(name).subscribe((set) => (seen.last = set)));
  return seen;
}

const view = (set: readonly ServiceInstance[] | undefined): string =>
  JSON.stringify(set?.map((i) => [i.serviceId, i.address, i.port, i.tags, i.meta]));

/** Within 2 s, the watch and discover() both show `expected` (a view of the set). */
async function bothShow(
  discovery: DiscoveryService,
  name: string,
  seen: { last?: ServiceInstance[] },
  expected: readonly ServiceInstance[],
  what: string,
): Promise<void> {
  await waitFor(
    async () =>
      view(seen.last) === view(expected) && view(await discovery.discover(name)) === view(expected),
    {
      timeoutMs: 2_000,
      message: `${what}: watch and discover() should show ${view(expected)} (watch: ${view(seen.last)})`,
    },
  );
}

const instance = (r: Registered): ServiceInstance =>
  ({
    serviceId: r.id,
    name: r.name,
    address: r.address ?? '127.0.0.1',
    port: r.port ?? 9000,
    tags: r.tags ?? [],
    meta: r.meta ?? {},
  }) as ServiceInstance;

describe('live discovery under churn and at the edges (real Consul)', () => {
  it('a name served by the change feed sees a re-registration of the same serviceId with a new port, meta, address or tags', async () => {
    const p = await proxy();
    // maxLongPolls 1: the first name takes the one long-poll, the second is served by the feed.
    const discovery = await createApp(p.port, { watch: { maxLongPolls: 1 } });
    await registerRaw({ name: 'edge-pad', id: 'edge-pad-1' });
    watchLast(discovery, 'edge-pad');
    const first: Registered = { name: 'edge-orders', id: 'edge-orders-1', port: 9000 };
    await registerRaw(first);
    const seen = watchLast(discovery, 'edge-orders');
    await bothShow(discovery, 'edge-orders', seen, [instance(first)], 'initial set');
    // The feed serves it: no long-poll of its own.
    expect(p.requests(/\/v1\/health\/service\/edge-orders\?.*index=/)).toEqual([]);

    const steps: [string, Registered][] = [
      ['new port', { ...first, port: 9001 }],
      ['new meta', { ...first, port: 9001, meta: { version: '2' } }],
      ['new address', { ...first, port: 9001, meta: { version: '2' }, address: '127.0.0.2' }],
      [
        'new tags',
        { ...first, port: 9001, meta: { version: '2' }, address: '127.0.0.2', tags: ['b'] },
      ],
    ];
    for (const [what, next] of steps) {
      await registerRaw(next);
      await bothShow(discovery, 'edge-orders', seen, [instance(next)], what);
    }
    expect(p.requests(/\/v1\/health\/service\/edge-orders\?.*index=/)).toEqual([]);
  });

  it('a feed-served watch of "EdgeCart" follows Consul\'s "edgecart" (names match case-insensitively)', async () => {
    const p = await proxy();
    const discovery = await createApp(p.port, { watch: { maxLongPolls: 1 } });
    await registerRaw({ name: 'edge-pad2', id: 'edge-pad2-1' });
    watchLast(discovery, 'edge-pad2');
    const one: Registered = { name: 'edgecart', id: 'edgecart-1' };
    await registerRaw(one);
    const seen = watchLast(discovery, 'EdgeCart');
    await bothShow(discovery, 'EdgeCart', seen, [instance(one)], 'initial set');

    const two: Registered = { name: 'edgecart', id: 'edgecart-2', port: 9002 };
    await registerRaw(two);
    await bothShow(discovery, 'EdgeCart', seen, [instance(one), instance(two)], 'new instance');
    await agent.api().failTtl('service:edgecart-1', 'down');
    await bothShow(discovery, 'EdgeCart', seen, [instance(two)], 'check critical');
  });

  it('churn: the last unsubscribe leaves the long-poll to end by itself; a returning subscriber reuses it; held connections stay within maxSockets + maxLongPolls + 2', async () => {
    const p = await proxy();
    const maxSockets = 4;
    const maxLongPolls = 4;
    const bound = maxSockets + maxLongPolls + 2;
    // A long wait, so an abandoned poll would stay held by the agent for the whole test.
    const discovery = await createApp(p.port, {
      consul: { maxSockets },
      watch: { maxLongPolls, waitTime: '60s' },
    });
    const names = ['churn-a', 'churn-b', 'churn-c'];
    for (const name of names) await registerRaw({ name, id: `${name}-1` });
    await registerRaw({ name: 'churn-other', id: 'churn-other-1' });

    const longPolls = (name: string): string[] =>
      p.requests(new RegExp(`/v1/health/service/${name}\\?.*index=`));
    for (let cycle = 0; cycle < 40; cycle++) {
      const name = names[cycle % names.length];
      let got: ServiceInstance[] | undefined;
      const sub = discovery.watch(name).subscribe((set) => (got = set));
      await waitFor(() => got !== undefined, {
        timeoutMs: 3_000,
        message: `cycle ${cycle}: watch(${name}) should get its set`,
      });
      expect(got?.map((i) => i.serviceId)).toEqual([`${name}-1`]);
      // Unsubscribe only once the long-poll is on the wire (on a loaded machine it may follow
      // the first set late): it is what the last unsubscribe must leave running.
      await waitFor(() => longPolls(name).length > 0, {
        timeoutMs: 3_000,
        message: `cycle ${cycle}: watch(${name}) should have its long-poll out`,
      });
      sub.unsubscribe();
      expect(p.heldConnections).toBeLessThanOrEqual(bound);
    }
    // Each name kept one long-poll across its returns: no poll was aborted and re-created.
    for (const name of names) expect(longPolls(name)).toHaveLength(1);
    expect(p.abandonedConnections).toBe(0);
    expect(p.peakHeldConnections).toBeLessThanOrEqual(bound);
    // The agent still serves everything else.
    expect((await discovery.discover('churn-other')).map((i) => i.serviceId)).toEqual([
      'churn-other-1',
    ]);
  });

  it('an idle long-poll ends by itself within waitTime after the last unsubscribe; then a new subscriber starts a new one', async () => {
    const p = await proxy();
    const discovery = await createApp(p.port, { watch: { waitTime: '1s' } });
    await registerRaw({ name: 'linger-a', id: 'linger-a-1' });
    const polls = (): string[] => p.requests(/\/v1\/health\/service\/linger-a\?.*index=/);
    const first = watchLast(discovery, 'linger-a');
    await waitFor(() => polls().length === 1 && first.last !== undefined, {
      timeoutMs: 2_000,
      message: 'the long-poll should be open',
    });
    for (const s of subscriptions) s.unsubscribe();
    subscriptions.clear();
    expect(discovery.snapshot('linger-a')).toBeUndefined();
    // Consul answers the idle poll after ~1 s (+ up to wait/16): it is not re-armed.
    await waitFor(() => p.inFlight === 0, {
      timeoutMs: 3_000,
      message: 'the idle long-poll should end by itself',
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(polls()).toHaveLength(1);
    expect(p.abandonedConnections).toBe(0);

    const again = watchLast(discovery, 'linger-a');
    await waitFor(() => polls().length === 2 && again.last !== undefined, {
      timeoutMs: 2_000,
      message: 'a new subscriber starts a new long-poll',
    });
  });
});
