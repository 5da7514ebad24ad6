import 'reflect-metadata';
import { createHook } from 'node:async_hooks';
import { sep } from 'node:path';
import { Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { filter, firstValueFrom } from 'rxjs';
import type { BlockingReadOptions } from '../consul/consul.client.js';
import { CONSUL_CLIENT, DISCOVERY_PROVIDER } from '../discovery.constants.js';
import { DiscoveryService } from '../discovery.service.js';
import { ConsulResponseError } from '../errors/consul-response.error.js';
import { DiscoverySettingsError } from '../errors/discovery-settings.error.js';
import { DiscoveryUnavailableError } from '../errors/discovery-unavailable.error.js';
import type { ServiceDiscoveryProtocol } from '../protocol/service-discovery.protocol.js';
import { isUnknownCheck } from '../provider/consul.registrar.js';
import { ShardingService } from '../sharding/sharding.service.js';
import {
  DiscoveryTestingModule,
  type DiscoveryTestingModuleOptions,
} from './discovery-testing.module.js';
import { InMemoryDiscovery } from './in-memory-discovery.js';
import { InMemoryCatalog } from './in-memory.catalog.js';
import { InMemoryTransport } from './in-memory.transport.js';
import { createDiscoverySettings } from '../settings/discovery-settings.factory.js';
import { WatchRegistry } from '../watch/watch.registry.js';

const LONG_WAIT: BlockingReadOptions = { waitMs: 60_000, longPoll: true };
const instance = (serviceId: string, port = 5000) => ({
  serviceId,
  name: 'orders',
  address: '127.0.0.1',
  port,
  tags: [],
  meta: {},
  node: 'in-memory',
});

/** Lets every pending promise callback run (a blocking query woken by a change answers). */
const settled = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

const OWN_CODE = `${sep}lib${sep}`;

/**
 * Timers this library's code creates from now on and that are still armed (Jest's own, e.g. its
 * reporter's, are not counted). A cleared or fired timer's destroy hook runs a turn later: await
 * `settled()` first.
 */
function trackOwnTimers(): { armed: () => number; settled: () => Promise<void>; stop: () => void } {
  const armed = new Set<number>();
  const hook = createHook({
    init(id, type) {
      if (type !== 'Timeout') return;
      // The frame that called setTimeout: in this library, not in a dependency or Jest.
      const frames = (new Error().stack ?? '').split('\n');
      const caller = frames[frames.findIndex((f) => f.includes('at setTimeout')) + 1] ?? '';
      if (caller.includes(OWN_CODE) && !caller.includes(`node_modules${sep}`)) armed.add(id);
    },
    destroy(id) {
      armed.delete(id);
    },
  }).enable();
  const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
  return {
    armed: () => armed.size,
    settled: async () => {
      await turn();
      await turn();
    },
    stop: () => hook.disable(),
  };
}

describe('InMemoryTransport', () => {
  let catalog: InMemoryCatalog;
  let transport: InMemoryTransport;

  beforeEach(() => {
    catalog = new InMemoryCatalog();
    transport = new InMemoryTransport(catalog);
  });

  afterEach(() => transport.close());

  it('answers at once without an index, with the name’s index', async () => {
    catalog.declare('orders', [instance('orders-1')]);
    const answer = await transport.watchHealthyInstances('orders', { ...LONG_WAIT, index: 0 });
    expect(answer.value).toEqual([instance('orders-1')]);
    expect(answer.index).toBe(catalog.indexOf('orders'));
  });

  it('a blocking query wakes on a change of its name only', async () => {
    catalog.declare('orders', [instance('orders-1')]);
    const index = catalog.indexOf('orders');
    let answered = false;
    const pending = transport
      .watchHealthyInstances('orders', { ...LONG_WAIT, index })
      .finally(() => (answered = true));
    catalog.declare('billing', [{ ...instance('billing-1'), name: 'billing' }]);
    await settled();
    expect(answered).toBe(false);

    catalog.setPassing('orders-1', false);
    const answer = await pending;
    expect(answer.value).toEqual([]);
    expect(answer.index).toBeGreaterThan(index);
  });

  it('a blocking query answers the same set and index when its wait runs out', async () => {
    catalog.declare('orders', [instance('orders-1')]);
    const index = catalog.indexOf('orders');
    const answer = await transport.watchHealthyInstances('orders', {
      waitMs: 20,
      longPoll: true,
      index,
    });
    expect(answer).toEqual({ value: [instance('orders-1')], index });
  });

  it('abort and close end a waiting query as ConsulClient’s do, leaving no timer', async () => {
    const own = trackOwnTimers();
    const controller = new AbortController();
    const aborted = transport.watchServiceNames({
      ...LONG_WAIT,
      index: 1,
      signal: controller.signal,
    });
    const closed = transport.watchCheckStates({ ...LONG_WAIT, index: 1 });
    expect(own.armed()).toBe(2);

    controller.abort();
    await expect(aborted).rejects.toMatchObject({ code: 'EABORTED' });
    transport.close();
    await expect(closed).rejects.toBeInstanceOf(DiscoveryUnavailableError);
    await own.settled();
    own.stop();
    expect(own.armed()).toBe(0);
    await expect(transport.healthyInstances('orders')).rejects.toMatchObject({ code: 'ECLOSED' });
  });

  it('starts a registration’s check as the agent does; a pass of an unknown check is a 404', async () => {
    await transport.registerService({ name: 'a', id: 'a-1', port: 1, tags: [], meta: {} });
    await transport.registerService({
      name: 'a',
      id: 'a-2',
      port: 2,
      tags: [],
      meta: {},
      check: { ttl: '10s', status: 'passing' },
    });
    await transport.registerService({
      name: 'a',
      id: 'a-3',
      port: 3,
      tags: [],
      meta: {},
      check: { ttl: '10s' },
    });
    await transport.registerService({
      name: 'a',
      id: 'a-4',
      port: 4,
      tags: [],
      meta: {},
      check: { http: 'http://127.0.0.1:1/health', interval: '10s', timeout: '5s' },
    });
    expect((await transport.healthyInstances('a')).map((i) => i.serviceId)).toEqual(['a-1', 'a-2']);

    await transport.passCheck('service:a-3');
    expect((await transport.healthyInstances('a')).map((i) => i.serviceId)).toEqual([
      'a-1',
      'a-2',
      'a-3',
    ]);

    const error: unknown = await transport.passCheck('service:a-1').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConsulResponseError);
    // What makes self-registration re-register at once (self-repair).
    expect(isUnknownCheck(error)).toBe(true);
  });
});

describe('InMemoryTransport under the change feed (names beyond watch.maxLongPolls)', () => {
  it('the real WatchRegistry follows names through /v1/health/state/any and /v1/catalog/services', async () => {
    const catalog = new InMemoryCatalog();
    const transport = new InMemoryTransport(catalog);
    const settings = createDiscoverySettings(
      { autoRegister: false, watch: { maxLongPolls: 1 } },
      {},
    );
    const registry = new WatchRegistry(settings, transport);
    catalog.declare('orders', [instance('orders-1')]);
    catalog.declare('billing', [{ ...instance('billing-1'), name: 'billing' }]);
    const polled = registry.acquire('billing');
    const fed = registry.acquire('orders');
    const sets: string[][] = [];
    const subscription = fed.instances$.subscribe((set) => sets.push(set.map((i) => i.serviceId)));
    const next = (n: number) => firstValueFrom(fed.instances$.pipe(filter(() => sets.length >= n)));

    await next(1);
    catalog.declare('orders', [instance('orders-1'), instance('orders-2')]);
    await next(2);
    catalog.setPassing('orders-1', false);
    await next(3);
    expect(sets).toEqual([['orders-1'], ['orders-1', 'orders-2'], ['orders-2']]);

    subscription.unsubscribe();
    registry.release(fed);
    registry.release(polled);
    await registry.closeAll();
    transport.close();
  });
});

describe('InMemoryCatalog', () => {
  it('setPassing(false) holds an instance critical through its own TTL passes', () => {
    const catalog = new InMemoryCatalog();
    catalog.register(instance('orders-1'), { ttl: true, passing: true });
    catalog.setPassing('orders-1', false);
    expect(catalog.pass('orders-1')).toBe(true);
    expect(catalog.passing('orders')).toEqual([]);
    catalog.setPassing('orders-1', true);
    expect(catalog.passing('orders')).toEqual([instance('orders-1')]);
  });

  it('setInstances leaves registrations made through the agent alone', () => {
    const catalog = new InMemoryCatalog();
    catalog.register(instance('orders-self'), { ttl: true, passing: true });
    catalog.declare('orders', [instance('orders-1')]);
    catalog.declare('orders', []);
    expect(catalog.passing('orders').map((i) => i.serviceId)).toEqual(['orders-self']);
  });
});

describe('DiscoveryTestingModule', () => {
  const compile = (options: DiscoveryTestingModuleOptions) =>
    Test.createTestingModule({ imports: [DiscoveryTestingModule.forRoot(options)] }).compile();

  const settingsError = async (run: () => Promise<unknown>): Promise<DiscoverySettingsError> => {
    const error: unknown = await run().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DiscoverySettingsError);
    return error as DiscoverySettingsError;
  };

  it('validates services like register() arguments, naming the instance', async () => {
    const error = await settingsError(() =>
      compile({ services: { orders: [{ serviceId: 'orders-1', port: 70000 }] } }),
    );
    expect(error.message).toBe(
      'Invalid DiscoveryTestingModule options: services.orders[0].port must not be greater than 65535',
    );
    const unknown = await settingsError(() =>
      compile({ servics: {} } as unknown as DiscoveryTestingModuleOptions),
    );
    expect(unknown.paths).toEqual(['servics']);
  });

  it('datacenter: its own holds the instances naming none; another declared one holds its own; an unknown one rejects as Consul does', async () => {
    const app = await compile({
      datacenter: 'east',
      services: {
        orders: [
          { serviceId: 'orders-1', port: 5001 },
          { serviceId: 'orders-2', port: 5002, datacenter: 'west' },
        ],
      },
    });
    const provider = app.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
    const ids = async (datacenter?: string) =>
      (await provider.discover('orders', datacenter ? { datacenter } : {})).map((i) => i.serviceId);
    expect(await ids('east')).toEqual(['orders-1']);
    expect(await ids('west')).toEqual(['orders-2']);
    const error: unknown = await provider
      .discover('orders', { datacenter: 'dc1' })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConsulResponseError);
    expect((error as ConsulResponseError).status).toBe(500);
    expect((error as ConsulResponseError).consulMessage).toBe('No path to datacenter');
    await app.close();

    const bad = await settingsError(() => compile({ datacenter: 'dc 1' }));
    expect(bad.paths).toEqual(['datacenter']);
  });

  it('fills an instance’s defaults; setInstances validates the same way', async () => {
    const app = await compile({ services: { orders: [{ serviceId: 'orders-1', port: 5001 }] } });
    const provider = app.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
    expect(await provider.discover('orders')).toEqual([instance('orders-1', 5001)]);

    const memory = app.get(InMemoryDiscovery);
    expect(() =>
      memory.setInstances('orders', [{ serviceId: 'orders-2', port: 1, tags: [''] }]),
    ).toThrow(
      'Invalid InMemoryDiscovery.setInstances() arguments: each value in instances[0].tags should not be empty',
    );
    expect(() => memory.setPassing('orders-9', false)).toThrow(
      'serviceId "orders-9" is not an instance known to InMemoryDiscovery',
    );
    memory.setInstances('orders', [
      { serviceId: 'orders-2', port: 5002, node: 'n2', datacenter: 'dc2' },
    ]);
    expect(await provider.discover('orders', { datacenter: 'dc2' })).toEqual([
      { ...instance('orders-2', 5002), node: 'n2', datacenter: 'dc2' },
    ]);
    await app.close();
  });

  it('exclusive sharding: locks with fencing tokens, lost when self turns critical, re-acquired', async () => {
    const app = await compile({
      self: { name: 'orders', port: 5001, serviceId: 'orders-a' },
      sharding: {
        partitions: 2,
        mode: 'exclusive',
        settleMs: 10,
        lock: { lockDelay: '100ms' },
      },
    });
    await app.init();
    const sharding = app.get(ShardingService);
    const owning = (count: number) =>
      firstValueFrom(sharding.assignments$.pipe(filter((a) => a.owned.length === count)));

    await owning(2);
    expect([sharding.token(0), sharding.token(1)]).toEqual([1, 1]);

    // The session is bound to self's check: critical → invalidated, its locks released.
    app.get(InMemoryDiscovery).setPassing('orders-a', false);
    await owning(0);
    expect(sharding.token(0)).toBeUndefined();

    // Passing again: a new session, the locks again after their lock-delay, tokens grown.
    app.get(InMemoryDiscovery).setPassing('orders-a', true);
    await owning(2);
    expect([sharding.token(0), sharding.token(1)]).toEqual([2, 2]);
    await app.close();
  });

  it('isGlobal: true makes its exports visible to every module', async () => {
    @Module({
      providers: [
        { provide: 'sees', useFactory: (d: DiscoveryService) => d, inject: [DiscoveryService] },
      ],
    })
    class Elsewhere {}
    const app = await Test.createTestingModule({
      imports: [DiscoveryTestingModule.forRoot({ isGlobal: true }), Elsewhere],
    }).compile();
    expect(app.get('sees', { strict: false })).toBeInstanceOf(DiscoveryService);
    await app.close();
  });

  it('does not export CONSUL_CLIENT', async () => {
    @Module({
      imports: [DiscoveryTestingModule.forRoot()],
      providers: [
        { provide: 'uses-client', useFactory: (c: unknown) => c, inject: [CONSUL_CLIENT] },
      ],
    })
    class Consumer {}
    await expect(Test.createTestingModule({ imports: [Consumer] }).compile()).rejects.toThrow(
      /CONSUL_CLIENT/,
    );
  });

  it('leaves no timer behind after close (self, heartbeat, watches, sharding)', async () => {
    const own = trackOwnTimers();
    try {
      const app = await compile({
        self: { name: 'orders', port: 5001, serviceId: 'orders-self' },
        sharding: { partitions: 4, settleMs: 10, handoffDelayMs: 0 },
        services: { billing: [{ serviceId: 'billing-1', port: 5002 }] },
      });
      await app.init();
      const discovery = app.get(DiscoveryService);
      const watched = discovery.watch('billing').subscribe();
      expect(await firstValueFrom(discovery.watch('orders'))).toHaveLength(1);
      // Self alone: every partition is its own once the settle window and handoff ran.
      const sharding = app.get(ShardingService);
      await firstValueFrom(sharding.assignments$.pipe(filter((a) => a.owned.length === 4)));
      expect(own.armed()).toBeGreaterThan(0); // the heartbeat, the blocking queries' waits
      await app.close();
      watched.unsubscribe();
      await own.settled();
      expect(own.armed()).toBe(0);
    } finally {
      own.stop();
    }
  });
});
