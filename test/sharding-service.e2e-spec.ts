import type { TestingModule } from '@nestjs/testing';
import {
  DiscoverySettingsError,
  ShardingService,
  type DiscoveryModuleOptions,
  type ShardAssignment,
} from '../lib/index.js';
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

// ShardingService in-process on a real agent: its API, its arguments, its settings, the meta it
// publishes, and handlers that misbehave. Multi-process behaviour and faults:
// test/sharding.e2e-spec.ts and test/sharding.reliability-spec.ts.
const P = 64;

describe('ShardingService', () => {
  const apps = new TestApps();
  let agent: ConsulAgent;
  let proxy: CountingProxy;

  const options = (
    id: string,
    extra: Partial<DiscoveryModuleOptions> = {},
  ): DiscoveryModuleOptions => ({
    consul: { host: '127.0.0.1', port: proxy.port, timeoutMs: 2_000 },
    service: { name: 'shards', id, address: '127.0.0.1', port: 4500 },
    healthCheck: { ttl: '3s' },
    retry: { ...FAST_RETRY, failFast: true },
    shutdownTimeoutMs: 2_000,
    sharding: { partitions: P, settleMs: 50, handoffDelayMs: 20, drainTimeoutMs: 500 },
    ...extra,
  });

  async function settingsError(opts: DiscoveryModuleOptions): Promise<DiscoverySettingsError> {
    const error: unknown = await apps.create(opts).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(DiscoverySettingsError);
    return error as DiscoverySettingsError;
  }

  beforeAll(async () => {
    agent = await startConsulAgent();
    proxy = await startCountingProxy(agent.httpPort);
  });
  afterEach(() => apps.closeAll());
  afterAll(async () => {
    await proxy.close();
    await stopAllAgents();
  });

  it('partitionOf is murmur3 x86 32-bit (seed 0) of the UTF-8 key mod P', async () => {
    const app = await apps.create(options('shards-vectors', { autoRegister: false }));
    const sharding = app.get(ShardingService);
    expect(sharding.partitionOf('hello')).toBe(0x248bfa47 % P); // 7
    expect(sharding.partitionOf('order-42')).toBe(14);
    expect(sharding.partitionOf('')).toBe(0);
    expect(sharding.partitionOf('zürich')).toBe(9);
  });

  it('two instances: disjoint owned sets covering every partition, ownerOf and owns agree', async () => {
    const a = await apps.start(options('shards-a'));
    const b = await apps.start(options('shards-b'));
    const [sa, sb] = [a, b].map((app) => app.get(ShardingService));
    await waitFor(() => sa.owned().length + sb.owned().length === P && sb.owned().length > 0, {
      timeoutMs: 5_000,
      message: 'both instances own their half',
    });
    const all = [...sa.owned(), ...sb.owned()].sort((x, y) => x - y);
    expect(all).toEqual(Array.from({ length: P }, (_, p) => p));
    expect([sa.owned().length, sb.owned().length].sort()).toEqual([P / 2, P / 2]);
    for (let p = 0; p < P; p++) {
      const owner = sa.owns(p) ? 'shards-a' : 'shards-b';
      expect(sa.ownerOf(p)?.serviceId).toBe(owner);
      expect(sb.ownerOf(p)?.serviceId).toBe(owner);
      expect(sa.owns(p)).not.toBe(sb.owns(p));
    }
    expect(sa.ownerOf('hello')?.serviceId).toBe(sa.ownerOf(7)?.serviceId);
    expect(sa.token(0)).toBeUndefined(); // cooperative: no fencing token

    // What every instance publishes, so any reader computes the same table.
    const [entry] = await agent.api().healthService('shards', { passing: true });
    expect(entry.Service.Meta).toMatchObject({
      shardPartitions: String(P),
      shardBalance: '1',
      shardWeight: '1',
    });
  });

  it('assignments$ gives the current assignment at once, then each change of owned()', async () => {
    const app = await apps.start(options('shards-solo'));
    const sharding = app.get(ShardingService);
    const seen: ShardAssignment[] = [];
    const subscription = sharding.assignments$.subscribe((a) => seen.push(a));
    await waitFor(() => sharding.owned().length === P, { timeoutMs: 5_000, message: 'owns all' });
    subscription.unsubscribe();
    const last = seen.at(-1)!;
    expect(last.owned).toHaveLength(P);
    expect(last.members).toEqual(['shards-solo']);
    expect(last.version).toBeGreaterThanOrEqual(1);
    const late: ShardAssignment[] = [];
    sharding.assignments$.subscribe((a) => late.push(a)).unsubscribe();
    expect(late).toEqual([last]);
  });

  it('handlers: one per owned partition; a throwing one is logged; a hung one cannot keep the instance registered after close(), with an agent 50 ms slow', async () => {
    const logger = new CapturingLogger();
    const base = options('shards-handlers');
    const app: TestingModule = await apps.start(
      // drainTimeoutMs above shutdownTimeoutMs: at shutdown the handlers are bounded by the latter.
      {
        ...base,
        shutdownTimeoutMs: 1_000,
        sharding: { ...base.sharding!, drainTimeoutMs: 30_000 },
      },
      logger,
    );
    const sharding = app.get(ShardingService);
    const started = new Set<number>();
    sharding.onPartition((p) => {
      started.add(p);
      if (p === 0) throw new Error('handler failed on purpose');
      return new Promise<void>(() => undefined); // never settles, ignores its signal
    });
    await waitFor(() => started.size === P, { timeoutMs: 5_000, message: 'all handlers ran' });
    expect(logger.all()).toMatch(/handler of partition 0 failed: handler failed on purpose/);
    // An agent 50 ms slow each way: the deregistration needs time of its own, which the handlers
    // must leave it (a request still held when the client closes never reaches the agent).
    proxy.delayMs = 50;
    proxy.requestDelayMs = 50;
    const closing = performance.now();
    try {
      await apps.close(app);
    } finally {
      proxy.delayMs = 0;
      proxy.requestDelayMs = 0;
    }
    expect(performance.now() - closing).toBeLessThan(1_000 + 500);
    // The deregistration was answered before close() resolved, not cut off at the deadline.
    expect(logger.all()).toMatch(/Deregistered "shards-handlers"/);
    expect(logger.all()).not.toMatch(/Could not deregister/);
    expect(Object.keys(await agent.api().agentServices())).not.toContain('shards-handlers');
    expect(await agent.api().passingIds('shards')).not.toContain('shards-handlers');
  });

  it('bad arguments throw DiscoverySettingsError naming them, with no request', async () => {
    const app = await apps.create(options('shards-args', { autoRegister: false }));
    const sharding = app.get(ShardingService);
    const before = proxy.requestLines.length;
    const cases: [string, () => unknown][] = [
      ['key', () => sharding.partitionOf(42 as unknown as string)],
      ['key', () => sharding.partitionOf(undefined as unknown as string)],
      ['partition', () => sharding.owns(-1)],
      ['partition', () => sharding.owns(P)],
      ['partition', () => sharding.ownerOf(1.5)],
      ['partition', () => sharding.token(Number.NaN)],
      ['key', () => sharding.owns({} as unknown as string)],
      ['handler', () => sharding.onPartition('run' as unknown as () => void)],
    ];
    for (const [path, call] of cases) {
      let error: unknown;
      try {
        call();
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(DiscoverySettingsError);
      expect((error as DiscoverySettingsError).paths).toEqual([path]);
    }
    expect(proxy.requestLines.length).toBe(before);
  });

  it('without sharding settings every method names sharding.partitions', async () => {
    const app = await apps.create(
      options('shards-off', { autoRegister: false, sharding: undefined }),
    );
    const sharding = app.get(ShardingService);
    for (const call of [
      () => sharding.partitionOf('a'),
      () => sharding.owns(1),
      () => sharding.onPartition(() => undefined),
    ]) {
      expect(call).toThrow(DiscoverySettingsError);
      expect(call).toThrow(/sharding.partitions/);
    }
    expect(sharding.owned()).toEqual([]);
  });

  it('bad sharding settings fail app creation with the path named, before any request', async () => {
    const before = proxy.totalConnections;
    const exclusiveHttp = await settingsError(
      options('shards-bad', {
        healthCheck: { http: 'http://127.0.0.1:4500/health' },
        sharding: { partitions: 8, mode: 'exclusive' },
      }),
    );
    expect(exclusiveHttp.paths).toEqual(['sharding.mode']);
    const reserved = await settingsError(
      options('shards-bad', {
        service: {
          name: 'shards',
          id: 'shards-bad',
          address: '127.0.0.1',
          port: 4500,
          meta: { shardPartitions: '8' },
        },
      }),
    );
    expect(reserved.paths).toEqual(['service.meta']);
    const partitions = await settingsError(options('shards-bad', { sharding: { partitions: 0 } }));
    expect(partitions.paths).toEqual(['sharding.partitions']);
    expect(proxy.totalConnections).toBe(before);
  });
});
