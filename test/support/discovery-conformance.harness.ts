import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { INestApplicationContext } from '@nestjs/common';
import { firstValueFrom, type Subscription } from 'rxjs';
import {
  ConsulResponseError,
  DISCOVERY_PROVIDER,
  DiscoveryHttpClient,
  DiscoveryService,
  DiscoverySettingsError,
  ShardingService,
  type DiscoveryModuleOptions,
  type ServiceDiscoveryProtocol,
  type ServiceInstance,
} from '../../lib/index.js';
import { shardTable } from './shard-table.harness.js';
import { waitFor } from './wait-for.harness.js';

// One conformance suite for every implementation of the module's behaviour: declared once here,
// run by test/conformance-consul.e2e-spec.ts (a real agent) and
// test/conformance-in-memory.e2e-spec.ts (the double of lib/testing/), so the double cannot
// drift from what Consul does. A driver creates the app and changes the membership behind it.

export interface ConformanceSelf {
  name: string;
  port: number;
  serviceId: string;
}

export interface ConformanceApp {
  self?: ConformanceSelf;
  sharding?: DiscoveryModuleOptions['sharding'];
}

/** An instance the driver registers behind the app's back (address 127.0.0.1). */
export interface ConformanceInstance {
  serviceId: string;
  port: number;
  tags?: string[];
  meta?: Record<string, string>;
}

export interface ConformanceDriver {
  /** `node` (and `datacenter`, when the backend sets one) of every instance the backend returns. */
  readonly node: string;
  readonly datacenter?: string;
  /** The datacenter the backend holds instances in when they name none (a dev agent's 'dc1'). */
  readonly localDatacenter: string;
  /** Compiles and bootstraps an app; rejects as the module's creation does. */
  start(app: ConformanceApp): Promise<INestApplicationContext>;
  /** Registers (or replaces) an instance of `name`, passing or critical. */
  addInstance(name: string, instance: ConformanceInstance, passing?: boolean): Promise<void>;
  setPassing(serviceId: string, passing: boolean): Promise<void>;
  removeInstance(serviceId: string): Promise<void>;
  /** Whether the backend holds the instance, whatever its health. */
  holds(serviceId: string): Promise<boolean>;
  /** afterEach: closes the apps and removes what the test added. */
  reset(): Promise<void>;
}

const WAIT_MS = 10_000;
let names = 0;

export function describeDiscoveryConformance(
  label: string,
  driver: () => ConformanceDriver | Promise<ConformanceDriver>,
): void {
  describe(`discovery conformance (${label})`, () => {
    let d: ConformanceDriver;
    const servers = new Set<Server>();
    const subscriptions = new Set<Subscription>();

    /** A fresh service name per test, so nothing is left over from another one. */
    const fresh = (): string => `conf-${++names}-${Date.now().toString(36)}`;

    const expected = (name: string, i: ConformanceInstance): ServiceInstance => ({
      serviceId: i.serviceId,
      name,
      address: '127.0.0.1',
      port: i.port,
      tags: i.tags ?? [],
      meta: i.meta ?? {},
      node: d.node,
      ...(d.datacenter === undefined ? {} : { datacenter: d.datacenter }),
    });

    const ids = (instances: readonly ServiceInstance[]): string[] =>
      instances.map((i) => i.serviceId);

    async function started(app: ConformanceApp = {}) {
      const ctx = await d.start(app);
      return {
        ctx,
        provider: ctx.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER),
        discovery: ctx.get(DiscoveryService),
      };
    }

    /** Records every emission of `watch(name)`; `next(n)` waits for the n-th. */
    function record(discovery: DiscoveryService, name: string, tag?: string) {
      const seen: ServiceInstance[][] = [];
      const source = tag === undefined ? discovery.watch(name) : discovery.watch(name, { tag });
      subscriptions.add(source.subscribe((set) => seen.push(set)));
      const nth = (n: number) =>
        waitFor(() => seen.length >= n && seen[n - 1], {
          timeoutMs: WAIT_MS,
          message: `watch(${name}) emission ${n}`,
        });
      return { seen, nth };
    }

    async function backend(id: string): Promise<{ port: number }> {
      const server = createServer((_req, res) => res.end(id));
      servers.add(server);
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      return { port: (server.address() as AddressInfo).port };
    }

    beforeAll(async () => {
      d = await driver();
    });

    afterEach(async () => {
      for (const s of subscriptions) s.unsubscribe();
      subscriptions.clear();
      await d.reset();
      await Promise.all([...servers].map((s) => new Promise((resolve) => s.close(resolve))));
      servers.clear();
    });

    describe('discover', () => {
      it('returns passing instances only, sorted by serviceId, as copies; unknown → []', async () => {
        const { provider, discovery } = await started();
        const name = fresh();
        const b = { serviceId: `${name}-b`, port: 5002, tags: ['x'], meta: { zone: 'b' } };
        const a = { serviceId: `${name}-a`, port: 5001 };
        const c = { serviceId: `${name}-c`, port: 5003 };
        await d.addInstance(name, b);
        await d.addInstance(name, a);
        await d.addInstance(name, c, false);

        const found = await provider.discover(name);
        expect(found).toEqual([expected(name, a), expected(name, b)]);
        found[1].tags.push('mutated');
        found.pop();
        expect(await discovery.discover(name)).toEqual([expected(name, a), expected(name, b)]);
        expect(await provider.discover(fresh())).toEqual([]);
      });

      it('filters by tag', async () => {
        const { provider } = await started();
        const name = fresh();
        const blue = { serviceId: `${name}-1`, port: 5001, tags: ['blue', 'v1'] };
        await d.addInstance(name, blue);
        await d.addInstance(name, { serviceId: `${name}-2`, port: 5002, tags: ['green'] });

        expect(await provider.discover(name, { tag: 'blue' })).toEqual([expected(name, blue)]);
        expect(await provider.discover(name, { tag: 'red' })).toEqual([]);
      });

      it('follows setPassing both ways', async () => {
        const { provider } = await started();
        const name = fresh();
        await d.addInstance(name, { serviceId: `${name}-1`, port: 5001 });
        await d.addInstance(name, { serviceId: `${name}-2`, port: 5002 });

        await d.setPassing(`${name}-1`, false);
        expect(ids(await provider.discover(name))).toEqual([`${name}-2`]);
        await d.setPassing(`${name}-1`, true);
        expect(ids(await provider.discover(name))).toEqual([`${name}-1`, `${name}-2`]);
      });
    });

    describe('answers as Consul does', () => {
      it('matches names and tags case-insensitively (the registered spelling comes back)', async () => {
        const { provider, discovery } = await started();
        const name = fresh();
        const one = { serviceId: `${name}-1`, port: 5001, tags: ['v1'] };
        await d.addInstance(name, one);

        expect(await provider.discover(name.toUpperCase())).toEqual([expected(name, one)]);
        expect(await provider.discover(name, { tag: 'V1' })).toEqual([expected(name, one)]);
        const watched = record(discovery, name.toUpperCase());
        expect(await watched.nth(1)).toEqual([expected(name, one)]);
      });

      it('the local datacenter, named, holds the instances that name none', async () => {
        const { provider } = await started();
        const name = fresh();
        const one = { serviceId: `${name}-1`, port: 5001 };
        await d.addInstance(name, one);

        expect(await provider.discover(name, { datacenter: d.localDatacenter })).toEqual([
          expected(name, one),
        ]);
      });

      it('an unknown datacenter rejects with ConsulResponseError "No path to datacenter"', async () => {
        const { provider } = await started();
        const name = fresh();
        await d.addInstance(name, { serviceId: `${name}-1`, port: 5001 });

        const error = await provider.discover(name, { datacenter: 'nowhere' }).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(error).toBeInstanceOf(ConsulResponseError);
        expect((error as ConsulResponseError).consulMessage).toContain('No path to datacenter');
      });
    });

    describe('watch', () => {
      it('emits the current set at once, then only real changes, as copies', async () => {
        const { discovery } = await started();
        const name = fresh();
        const one = { serviceId: `${name}-1`, port: 5001 };
        const two = { serviceId: `${name}-2`, port: 5002 };
        const down = { serviceId: `${name}-3`, port: 5003 };
        await d.addInstance(name, one);
        await d.addInstance(name, down, false);

        const first = record(discovery, name);
        expect(await first.nth(1)).toEqual([expected(name, one)]);

        await d.addInstance(name, two);
        expect(await first.nth(2)).toEqual([expected(name, one), expected(name, two)]);

        // Not changes of the passing set: the critical instance re-registered with other meta
        // (Consul's index moves), the same status set again, another service.
        await d.addInstance(name, { ...down, meta: { v: '2' } }, false);
        await d.setPassing(one.serviceId, true);
        await d.addInstance(fresh(), { serviceId: `${name}-other`, port: 5009 });
        // A real change afterwards: had any of those emitted, it would come before this one.
        await d.removeInstance(two.serviceId);
        expect(await first.nth(3)).toEqual([expected(name, one)]);

        // A second subscriber gets the current set at once, unaffected by what the first did.
        first.seen[2].pop();
        const second = record(discovery, name);
        expect(await second.nth(1)).toEqual([expected(name, one)]);
        expect(discovery.snapshot(name)).toEqual([expected(name, one)]);

        await d.setPassing(one.serviceId, false);
        expect(await first.nth(4)).toEqual([]);
        expect(await second.nth(2)).toEqual([]);
        expect(first.seen).toHaveLength(4);
      });

      it('watches a tag', async () => {
        const { discovery } = await started();
        const name = fresh();
        const blue = { serviceId: `${name}-1`, port: 5001, tags: ['blue'] };
        await d.addInstance(name, { serviceId: `${name}-2`, port: 5002, tags: ['green'] });
        const watched = record(discovery, name, 'blue');
        expect(await watched.nth(1)).toEqual([]);
        await d.addInstance(name, blue);
        expect(await watched.nth(2)).toEqual([expected(name, blue)]);
      });

      it('serves discover() from the watched set', async () => {
        const { provider, discovery } = await started();
        const name = fresh();
        const one = { serviceId: `${name}-1`, port: 5001 };
        const watched = record(discovery, name);
        expect(await watched.nth(1)).toEqual([]);
        await d.addInstance(name, one);
        await watched.nth(2);
        expect(await provider.discover(name)).toEqual([expected(name, one)]);
      });
    });

    describe('register / deregister', () => {
      it('register → true and discoverable; deregister → true, again → true', async () => {
        const { provider } = await started();
        const name = fresh();
        const serviceId = `${name}-1`;
        await expect(
          provider.register({ name, serviceId, port: 5001, address: '127.0.0.1', tags: ['t'] }),
        ).resolves.toBe(true);
        expect(await d.holds(serviceId)).toBe(true);
        expect(await provider.discover(name)).toEqual([
          expected(name, { serviceId, port: 5001, tags: ['t'] }),
        ]);

        await expect(provider.deregister(serviceId)).resolves.toBe(true);
        expect(await d.holds(serviceId)).toBe(false);
        expect(await provider.discover(name)).toEqual([]);
        await expect(provider.deregister(serviceId)).resolves.toBe(true);
        await expect(provider.deregister(`${name}-never`)).resolves.toBe(true);
      });

      it('a TTL check registered without a pass is critical until passed', async () => {
        const { provider } = await started();
        const name = fresh();
        const serviceId = `${name}-1`;
        await expect(
          provider.register({
            name,
            serviceId,
            port: 5001,
            address: '127.0.0.1',
            healthCheck: { ttl: '60s' },
          }),
        ).resolves.toBe(true);
        expect(await d.holds(serviceId)).toBe(true);
        expect(await provider.discover(name)).toEqual([]);
        await d.setPassing(serviceId, true);
        expect(ids(await provider.discover(name))).toEqual([serviceId]);
      });
    });

    describe('argument validation (same error class and message)', () => {
      async function settingsError(run: () => unknown): Promise<DiscoverySettingsError> {
        let caught: unknown;
        try {
          await run();
        } catch (error) {
          caught = error;
        }
        expect(caught).toBeInstanceOf(DiscoverySettingsError);
        return caught as DiscoverySettingsError;
      }

      it('register / deregister / discover / watch', async () => {
        const { provider, discovery } = await started();
        expect(
          (
            await settingsError(() =>
              provider.register({ name: 'bad_name', serviceId: 'ok', port: 70000 }),
            )
          ).message,
        ).toBe(
          'Invalid register() arguments: registration.name must be a DNS label (letters, digits, hyphens; at most 63); registration.port must not be greater than 65535',
        );
        expect((await settingsError(() => provider.deregister(''))).message).toBe(
          'Invalid deregister() arguments: serviceId must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$',
        );
        expect((await settingsError(() => provider.discover('a', { tag: '' }))).message).toBe(
          'Invalid discover() arguments: query.tag should not be empty',
        );
        expect((await settingsError(() => discovery.watch('no such'))).message).toBe(
          'Invalid discover() arguments: name must be a DNS label (letters, digits, hyphens; at most 63)',
        );
      });

      it('the module: self and sharding settings', async () => {
        const error = await settingsError(() =>
          d.start({
            self: { name: 'bad_name', port: 70000, serviceId: 'ok-1' },
            sharding: { partitions: 0 },
          }),
        );
        expect(error.message).toBe(
          'Invalid DiscoveryModule settings: service.name must be a DNS label (letters, digits, hyphens; at most 63); service.port must not be greater than 65535; sharding.partitions must not be less than 1',
        );
      });

      it('ShardingService without sharding', async () => {
        const { ctx } = await started();
        const sharding = ctx.get(ShardingService);
        expect((await settingsError(() => sharding.partitionOf('k'))).message).toBe(
          'Invalid ShardingService arguments: sharding.partitions is required to use ShardingService (sharding is not configured)',
        );
      });
    });

    describe('self-registration', () => {
      it('registers self at bootstrap: DiscoveryService.self, discover finds it', async () => {
        const name = fresh();
        const self = { name, port: 5001, serviceId: `${name}-self` };
        const { discovery, provider } = await started({ self });
        expect(discovery.self).toMatchObject({
          name,
          port: 5001,
          serviceId: self.serviceId,
          address: '127.0.0.1',
        });
        expect(await provider.discover(name)).toEqual([
          expected(name, { serviceId: self.serviceId, port: 5001 }),
        ]);
        await expect(discovery.deregisterSelf()).resolves.toBe(true);
        expect(await d.holds(self.serviceId)).toBe(false);
        await expect(discovery.registerSelf()).resolves.toBe(true);
        expect(ids(await provider.discover(name))).toEqual([self.serviceId]);
      });
    });

    describe('DiscoveryHttpClient', () => {
      it('fetch by name reaches the passing instances’ local servers', async () => {
        const { ctx } = await started();
        const http = ctx.get(DiscoveryHttpClient);
        const name = fresh();
        const one = await backend('one');
        const two = await backend('two');
        await d.addInstance(name, { serviceId: `${name}-1`, port: one.port });
        await d.addInstance(name, { serviceId: `${name}-2`, port: two.port });

        const answers = new Set<string>();
        for (let i = 0; i < 4; i++) {
          answers.add(await (await http.fetch(`http://${name}/who`)).text());
        }
        expect([...answers].sort()).toEqual(['one', 'two']);

        await d.setPassing(`${name}-1`, false);
        await waitFor(
          () =>
            http.choose(name)?.serviceId === `${name}-2` &&
            http.choose(name)?.serviceId === `${name}-2`,
          {
            timeoutMs: WAIT_MS,
            message: 'the critical instance leaves the rotation',
          },
        );
        for (let i = 0; i < 4; i++) {
          expect(await (await http.fetch(`http://${name}/who`)).text()).toBe('two');
        }
      });
    });

    describe('ShardingService (cooperative)', () => {
      it('two instances split the partitions; a critical one’s move to the other', async () => {
        const name = fresh();
        const partitions = 16;
        const self = { name, port: 5001, serviceId: `${name}-a` };
        const peer = `${name}-b`;
        const { ctx } = await started({
          self,
          sharding: { partitions, settleMs: 50, handoffDelayMs: 0 },
        });
        const sharding = ctx.get(ShardingService);
        await d.addInstance(name, {
          serviceId: peer,
          port: 5002,
          meta: { shardPartitions: String(partitions), shardBalance: '1', shardWeight: '1' },
        });

        const table = shardTable([self.serviceId, peer], partitions);
        const mine = table.owned(self.serviceId);
        // Gained partitions start after handoffDelayMs: wait for the table in force.
        const split = await waitFor(
          async () => {
            const a = await firstValueFrom(sharding.assignments$);
            return a.members.length === 2 && a.owned.join() === mine.join() && a;
          },
          { timeoutMs: WAIT_MS, message: 'both instances in the table, self owning its share' },
        );
        expect(split.members).toEqual([self.serviceId, peer]);
        expect(mine).toHaveLength(partitions / 2);
        const theirs = table.owned(peer)[0];
        expect(sharding.ownerOf(theirs)?.serviceId).toBe(peer);
        expect(sharding.owns(theirs)).toBe(false);

        await d.setPassing(peer, false);
        await waitFor(() => sharding.owned().length === partitions, {
          timeoutMs: WAIT_MS,
          message: 'the peer’s partitions move to self',
        });
        expect(sharding.ownerOf(theirs)?.serviceId).toBe(self.serviceId);
      });
    });

    describe('ShardingService (exclusive)', () => {
      it('holds the locks of its share with fencing tokens; takes a critical peer’s share', async () => {
        const name = fresh();
        const partitions = 8;
        const self = { name, port: 5001, serviceId: `${name}-a` };
        const peer = `${name}-b`;
        const { ctx } = await started({
          self,
          sharding: { partitions, mode: 'exclusive', settleMs: 50 },
        });
        const sharding = ctx.get(ShardingService);
        // A peer that holds no lock: its share of the table stays unowned while it passes.
        await d.addInstance(name, { serviceId: peer, port: 5002 });

        const mine = shardTable([self.serviceId, peer], partitions).owned(self.serviceId);
        await waitFor(() => sharding.owned().join() === mine.join(), {
          timeoutMs: WAIT_MS,
          message: 'self holds the locks of its share',
        });
        // Fresh keys: the first acquisition of each is LockIndex 1.
        expect(mine.map((p) => sharding.token(p))).toEqual(mine.map(() => 1));

        await d.setPassing(peer, false);
        const all = [...Array(partitions).keys()];
        await waitFor(() => sharding.owned().join() === all.join(), {
          timeoutMs: WAIT_MS,
          message: 'self acquires the critical peer’s partitions',
        });
        expect(all.map((p) => sharding.token(p))).toEqual(all.map(() => 1));
      });
    });
  });
}
