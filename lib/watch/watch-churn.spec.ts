import { seededRandom } from '../../test/support/seeded-random.harness.js';
import type { BlockingReadOptions } from '../consul/consul.client.js';
import type { ConsulTransport } from '../consul/consul.transport.js';
import type { ServiceInstance } from '../protocol/service-discovery.protocol.js';
import { createDiscoverySettings } from '../settings/discovery-settings.factory.js';
import { InMemoryCatalog } from '../testing/in-memory.catalog.js';
import { InMemoryTransport } from '../testing/in-memory.transport.js';
import type { ServiceWatch } from './service-watch.js';
import { WatchRegistry } from './watch.registry.js';

// A deterministic simulation of watch churn (replayable seeds; CHURN_SIM_SEED=<n> runs one) on
// the in-memory transport: random subscribe / unsubscribe / membership changes, interleaved with
// turns of the event loop. Invariants: no read is aborted before shutdown (an aborted long-poll
// would be held by a 1.8 agent until its wait ends), the blocking reads in flight never exceed
// maxLongPolls + 2 (the feed), and every watch with subscribers ends on Consul's set.

const NAMES = Array.from({ length: 12 }, (_, i) => `n${i}`);
const MAX_LONG_POLLS = 4;
const STEPS = 300;

const instance = (name: string, i: number): ServiceInstance => ({
  serviceId: `${name}-${i}`,
  name,
  address: '127.0.0.1',
  port: 5000 + i,
  tags: [],
  meta: {},
  node: 'in-memory',
});

/** The transport, counting blocking reads in flight and reads aborted before `closing`. */
function observed(transport: InMemoryTransport) {
  const stats = { inFlight: 0, peak: 0, abortedBeforeClose: 0, closing: false };
  const track = <T>(options: BlockingReadOptions, read: () => Promise<T>): Promise<T> => {
    const blocking = (options.index ?? 0) > 0;
    const onAbort = (): void => {
      if (!stats.closing) stats.abortedBeforeClose++;
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    if (blocking) stats.peak = Math.max(stats.peak, ++stats.inFlight);
    return read().finally(() => {
      if (blocking) stats.inFlight--;
      options.signal?.removeEventListener('abort', onAbort);
    });
  };
  const client = Object.create(transport) as ConsulTransport;
  Object.assign(client, {
    watchHealthyInstances: (name: string, options: BlockingReadOptions) =>
      track(options, () => transport.watchHealthyInstances(name, options)),
    watchCheckStates: (options: BlockingReadOptions) =>
      track(options, () => transport.watchCheckStates(options)),
    watchServiceNames: (options: BlockingReadOptions) =>
      track(options, () => transport.watchServiceNames(options)),
  });
  return { client, stats };
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function simulate(seed: number): Promise<void> {
  const random = seededRandom(seed);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)];
  const catalog = new InMemoryCatalog();
  for (const name of NAMES) catalog.declare(name, [instance(name, 1)]);
  const transport = new InMemoryTransport(catalog);
  const { client, stats } = observed(transport);
  const settings = createDiscoverySettings(
    {
      autoRegister: false,
      watch: { maxLongPolls: MAX_LONG_POLLS, rateLimit: { perSecond: 10_000, burst: 10_000 } },
      retry: { initialDelayMs: 1, maxDelayMs: 5 },
    },
    {},
  );
  const registry = new WatchRegistry(settings, client);
  const held: ServiceWatch[] = [];
  try {
    for (let step = 0; step < STEPS; step++) {
      const roll = random();
      if (roll < 0.4) {
        held.push(registry.acquire(pick(NAMES)));
      } else if (roll < 0.75 && held.length > 0) {
        const [watch] = held.splice(Math.floor(random() * held.length), 1);
        registry.release(watch);
      } else if (roll < 0.9) {
        const name = pick(NAMES);
        const count = 1 + Math.floor(random() * 3);
        catalog.declare(
          name,
          Array.from({ length: count }, (_, i) => instance(name, i + 1)),
        );
      } else {
        await turn();
      }
      expect(stats.inFlight).toBeLessThanOrEqual(MAX_LONG_POLLS + 2);
    }
    // Quiet: every watch with subscribers holds Consul's set.
    for (let i = 0; i < 20; i++) await turn();
    for (const watch of held) {
      expect(watch.snapshot?.map((x) => x.serviceId)).toEqual(
        catalog.passing(watch.name).map((x) => x.serviceId),
      );
    }
    expect(stats.abortedBeforeClose).toBe(0);
    expect(stats.peak).toBeLessThanOrEqual(MAX_LONG_POLLS + 2);
  } finally {
    stats.closing = true;
    await registry.closeAll();
    transport.close();
  }
}

describe('watch churn, simulated (seeded)', () => {
  const seeds = process.env.CHURN_SIM_SEED
    ? [Number(process.env.CHURN_SIM_SEED)]
    : Array.from({ length: 25 }, (_, i) => i + 1);

  it.each(seeds)(
    'seed %i: nothing aborted before shutdown, reads in flight ≤ maxLongPolls + 2, every set right',
    async (seed) => {
      await simulate(seed);
    },
  );
});
