import { hostname } from 'node:os';
import { DiscoverySettingsError } from '../errors/discovery-settings.error.js';
import type { DiscoveryModuleOptions } from './discovery-module-options.interface.js';
import { createDiscoverySettings } from './discovery-settings.factory.js';

const service = { name: 'orders', port: 3000, address: '127.0.0.1' };
const valid = (extra: Record<string, unknown> = {}): DiscoveryModuleOptions => ({
  service,
  ...extra,
});

function violationOf(options: unknown, env: NodeJS.ProcessEnv = {}): DiscoverySettingsError {
  try {
    createDiscoverySettings(options as DiscoveryModuleOptions, env);
  } catch (error) {
    if (error instanceof DiscoverySettingsError) return error;
    throw error;
  }
  throw new Error('expected a DiscoverySettingsError');
}

describe('createDiscoverySettings', () => {
  it('merges every default', () => {
    const s = createDiscoverySettings(valid(), {});
    expect(s.enabled).toBe(true);
    expect(s.autoRegister).toBe(true);
    expect(s.consul).toMatchObject({
      host: '127.0.0.1',
      port: 8500,
      secure: false,
      timeoutMs: 5000,
      maxSockets: 32,
    });
    expect(s.consul.token).toBeUndefined();
    expect(s.service).toMatchObject({
      name: 'orders',
      id: `orders-${hostname()}-3000`,
      address: '127.0.0.1',
      port: 3000,
      tags: [],
      meta: {},
    });
    expect(s.healthCheck).toEqual({ ttl: '10s', deregisterCriticalServiceAfter: '1m' });
    expect(s.heartbeat.intervalRatio).toBeCloseTo(1 / 3);
    expect(s.retry).toEqual({
      maxAttempts: 6,
      initialDelayMs: 200,
      maxDelayMs: 5000,
      failFast: false,
    });
    expect(s.shutdownTimeoutMs).toBe(3000);
    expect(s.watch).toMatchObject({
      waitTime: '60s',
      consistency: 'default',
      rateLimit: { perSecond: 20, burst: 10 },
      maxLongPolls: 64,
      services: [],
    });
  });

  it('sharding: absent is off; given, its defaults are merged per field', () => {
    expect(createDiscoverySettings(valid(), {}).sharding).toBeUndefined();
    const s = createDiscoverySettings(valid({ sharding: { partitions: 64, weight: 2 } }), {});
    expect(s.sharding).toMatchObject({
      partitions: 64,
      mode: 'cooperative',
      settleMs: 500,
      handoffDelayMs: 250,
      drainTimeoutMs: 30_000,
      balanceFactor: 1,
      weight: 2,
      lock: { prefix: 'athomic/sharding', lockDelay: '5s' },
    });
    expect(s.sharding?.lock.lockDelayMs).toBe(5_000);
  });

  it('merges per field and keeps the given values', () => {
    const s = createDiscoverySettings(
      valid({ retry: { maxAttempts: 2 }, watch: { rateLimit: { burst: 3 } } }),
      {},
    );
    expect(s.retry).toEqual({
      maxAttempts: 2,
      initialDelayMs: 200,
      maxDelayMs: 5000,
      failFast: false,
    });
    expect(s.watch.rateLimit).toEqual({ perSecond: 20, burst: 3 });
  });

  it('replaces the default check as a whole and fills interval/timeout defaults', () => {
    const s = createDiscoverySettings(
      valid({ healthCheck: { http: 'http://127.0.0.1:3000/health' } }),
      {},
    );
    expect(s.healthCheck).toEqual({
      http: 'http://127.0.0.1:3000/health',
      interval: '10s',
      timeout: '5s',
    });
  });

  it('reads Consul env conventions as defaults', () => {
    const s = createDiscoverySettings(valid(), {
      CONSUL_HTTP_ADDR: 'https://127.0.0.9:8501',
      CONSUL_HTTP_TOKEN: 'secret-token',
    });
    expect(s.consul).toMatchObject({
      host: '127.0.0.9',
      port: 8501,
      secure: true,
      token: 'secret-token',
    });
    const plain = createDiscoverySettings(valid(), {
      CONSUL_HTTP_ADDR: '127.0.0.7:9500',
      CONSUL_HTTP_SSL: 'true',
    });
    expect(plain.consul).toMatchObject({ host: '127.0.0.7', port: 9500, secure: true });
    const explicit = createDiscoverySettings(valid({ consul: { port: 1234 } }), {
      CONSUL_HTTP_ADDR: '127.0.0.7:9500',
    });
    expect(explicit.consul).toMatchObject({ host: '127.0.0.7', port: 1234 });
  });

  it('omits the address with preferAgentAddress and picks an IPv4 otherwise', () => {
    const agent = createDiscoverySettings(
      { service: { name: 'a', port: 1, preferAgentAddress: true } },
      {},
    );
    expect(agent.service.address).toBeUndefined();
    const own = createDiscoverySettings({ service: { name: 'a', port: 1 } }, {});
    expect(own.service.address).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
  });

  it('needs no service when autoRegister or enabled is false', () => {
    expect(createDiscoverySettings({ autoRegister: false }, {}).service.name).toBeUndefined();
    expect(createDiscoverySettings({ enabled: false }, {}).enabled).toBe(false);
  });

  it('copies tags and meta so later mutation does not leak in', () => {
    const tags = ['a'];
    const meta = { k: 'v' };
    const s = createDiscoverySettings({ service: { ...service, tags, meta } }, {});
    tags.push('b');
    meta.k = 'changed';
    expect(s.service.tags).toEqual(['a']);
    expect(s.service.meta).toEqual({ k: 'v' });
  });

  it('parses durations once into ms fields that spreads and JSON do not show', () => {
    const s = createDiscoverySettings(valid({ watch: { waitTime: '5s' } }), {});
    expect(s.watch.waitMs).toBe(5_000);
    expect(s.healthCheck).toMatchObject({ ttlMs: 10_000 });
    expect({ ...s.healthCheck }).toEqual({ ttl: '10s', deregisterCriticalServiceAfter: '1m' });
    expect(JSON.stringify(s.watch)).not.toContain('waitMs');
    expect(createDiscoverySettings(valid(), {}).watch.waitMs).toBe(60_000);
    const http = createDiscoverySettings(
      valid({ healthCheck: { http: 'http://127.0.0.1:3000/health', interval: '500ms' } }),
      {},
    );
    expect(http.healthCheck).toMatchObject({ intervalMs: 500 });
    const tcp = createDiscoverySettings(valid({ healthCheck: { tcp: '127.0.0.1:3000' } }), {});
    expect(tcp.healthCheck).toMatchObject({ intervalMs: 10_000 });
  });

  it('keeps every key of the meta and header maps', () => {
    const header = { 'X-Probe': ['1'], Accept: ['text/plain'] };
    const s = createDiscoverySettings(
      {
        service: { ...service, meta: { a: '1', 'b-c': '2' } },
        healthCheck: { http: 'http://127.0.0.1:3000/health', header },
      },
      {},
    );
    expect(s.service.meta).toEqual({ a: '1', 'b-c': '2' });
    expect(s.healthCheck).toMatchObject({ header });
  });

  it('derives DiscoveryModuleOptions from the settings classes', () => {
    const options: DiscoveryModuleOptions = {
      consul: { maxSockets: 4 },
      watch: { rateLimit: { burst: 2 }, consistency: 'stale' },
      healthCheck: { tcp: '127.0.0.1:1', interval: '1s' },
    };
    expect(createDiscoverySettings(valid(options), {}).consul.maxSockets).toBe(4);
    // @ts-expect-error fields set after validation are not options
    const derived: DiscoveryModuleOptions = { watch: { waitMs: 1 } };
    // @ts-expect-error a check is one of the public HealthCheck shapes
    const partialCheck: DiscoveryModuleOptions = { healthCheck: { interval: '1s' } };
    // @ts-expect-error unknown keys do not type-check either
    const typo: DiscoveryModuleOptions = { servce: {} };
    expect([derived, partialCheck, typo]).toHaveLength(3);
  });

  const cases: [string, unknown, string][] = [
    ['port 0', { service: { ...service, port: 0 } }, 'service.port'],
    ['port 70000', { service: { ...service, port: 70000 } }, 'service.port'],
    ['port "abc"', { service: { ...service, port: 'abc' } }, 'service.port'],
    ['port 3.5', { service: { ...service, port: 3.5 } }, 'service.port'],
    ['missing port', { service: { name: 'orders' } }, 'service.port'],
    ['missing name', { service: { port: 1 } }, 'service.name'],
    ['empty name', { service: { ...service, name: '' } }, 'service.name'],
    ['name with a space', { service: { ...service, name: 'my service' } }, 'service.name'],
    ['name with a slash', { service: { ...service, name: 'a/b' } }, 'service.name'],
    ['name of 64 chars', { service: { ...service, name: 'a'.repeat(64) } }, 'service.name'],
    ['unicode name', { service: { ...service, name: 'zürich' } }, 'service.name'],
    ['bad id', { service: { ...service, id: '-x' } }, 'service.id'],
    ['bad address', { service: { ...service, address: 'not an address!' } }, 'service.address'],
    ['tag not a string', { service: { ...service, tags: [1] } }, 'service.tags'],
    ['empty tag', { service: { ...service, tags: [''] } }, 'service.tags'],
    ['tags not an array', { service: { ...service, tags: 'a,b' } }, 'service.tags'],
    ['meta value not a string', { service: { ...service, meta: { a: 1 } } }, 'service.meta'],
    [
      'meta __proto__ key',
      { service: { ...service, meta: JSON.parse('{"__proto__":"x"}') } },
      'service.meta',
    ],
    ['bad ttl', { ...valid(), healthCheck: { ttl: 'abc' } }, 'healthCheck.ttl'],
    ['negative ttl', { ...valid(), healthCheck: { ttl: '-1s' } }, 'healthCheck.ttl'],
    ['ttl in years', { ...valid(), healthCheck: { ttl: '1y' } }, 'healthCheck.ttl'],
    ['zero ttl', { ...valid(), healthCheck: { ttl: '0s' } }, 'healthCheck.ttl'],
    ['unknown check shape', { ...valid(), healthCheck: { grpc: '127.0.0.1:1' } }, 'healthCheck'],
    [
      'two check kinds',
      { ...valid(), healthCheck: { ttl: '1s', tcp: '127.0.0.1:1' } },
      'healthCheck',
    ],
    ['http check not a URL', { ...valid(), healthCheck: { http: 'nope' } }, 'healthCheck.http'],
    [
      'tcp check without port',
      { ...valid(), healthCheck: { tcp: '127.0.0.1' } },
      'healthCheck.tcp',
    ],
    [
      'unknown key in check',
      { ...valid(), healthCheck: { ttl: '1s', interval: '1s' } },
      'healthCheck.interval',
    ],
    ['negative timeoutMs', { ...valid(), consul: { timeoutMs: -1 } }, 'consul.timeoutMs'],
    ['consul port "x"', { ...valid(), consul: { port: 'x' } }, 'consul.port'],
    ['consul host with a slash', { ...valid(), consul: { host: 'a/b' } }, 'consul.host'],
    ['negative shutdownTimeoutMs', { ...valid(), shutdownTimeoutMs: -5 }, 'shutdownTimeoutMs'],
    ['retry attempts 0', { ...valid(), retry: { maxAttempts: 0 } }, 'retry.maxAttempts'],
    [
      'maxDelay below initialDelay',
      { ...valid(), retry: { initialDelayMs: 500, maxDelayMs: 10 } },
      'retry.maxDelayMs',
    ],
    ['intervalRatio 1', { ...valid(), heartbeat: { intervalRatio: 1 } }, 'heartbeat.intervalRatio'],
    ['bad consistency', { ...valid(), watch: { consistency: 'eventual' } }, 'watch.consistency'],
    ['bad waitTime', { ...valid(), watch: { waitTime: '5 minutes' } }, 'watch.waitTime'],
    // Consul caps a blocking query's wait at 10 minutes; 600h would overflow Node's timer.
    ['waitTime 600h', { ...valid(), watch: { waitTime: '600h' } }, 'watch.waitTime'],
    ['waitTime 11m', { ...valid(), watch: { waitTime: '11m' } }, 'watch.waitTime'],
    ['waitTime 600001ms', { ...valid(), watch: { waitTime: '600001ms' } }, 'watch.waitTime'],
    // The agent's 200 connections per client: maxSockets + maxLongPolls + the feed's 2.
    [
      'maxSockets 150 + maxLongPolls 150',
      { ...valid(), consul: { maxSockets: 150 }, watch: { maxLongPolls: 150 } },
      'consul.maxSockets',
    ],
    [
      'maxSockets 100 + maxLongPolls 99 (201)',
      { ...valid(), consul: { maxSockets: 100 }, watch: { maxLongPolls: 99 } },
      'watch.maxLongPolls',
    ],
    // Not a valid HTTP header value: every request would fail as "unreachable".
    ['token with a trailing newline', { ...valid(), consul: { token: 'abc\n' } }, 'consul.token'],
    ['token with a NUL', { ...valid(), consul: { token: 'a\u0000b' } }, 'consul.token'],
    ['token with a non-latin1 char', { ...valid(), consul: { token: 'tök€n' } }, 'consul.token'],
    [
      'rate limit 0',
      { ...valid(), watch: { rateLimit: { perSecond: 0 } } },
      'watch.rateLimit.perSecond',
    ],
    ['bad watched name', { ...valid(), watch: { services: ['a b'] } }, 'watch.services'],
    ['typo in a key', { ...valid(), servce: {} }, 'servce'],
    [
      'key named like an Object.prototype member',
      { ...valid(), service: { ...service, hasOwnProperty: 'x' } },
      'service.hasOwnProperty',
    ],
    ['root key isPrototypeOf', { ...valid(), isPrototypeOf: 1 }, 'isPrototypeOf'],
    ['ms field given as an option', { ...valid(), watch: { waitMs: 5 } }, 'watch.waitMs'],
    [
      'ms field given in a check',
      { ...valid(), healthCheck: { ttl: '1s', ttlMs: 1000 } },
      'healthCheck.ttlMs',
    ],
    [
      'unknown key in a nested section',
      { ...valid(), watch: { rateLimit: { perSec: 1 } } },
      'watch.rateLimit.perSec',
    ],
    ['service not an object', { service: 'orders' }, 'service'],
    ['enabled "yes"', { ...valid(), enabled: 'yes' }, 'enabled'],
    ['ca file missing', { ...valid(), consul: { ca: '/nonexistent/ca.pem' } }, 'consul.ca'],
    [
      'cert without key',
      { ...valid(), consul: { cert: '-----BEGIN CERTIFICATE-----' } },
      'consul.cert',
    ],
    [
      'http.tls ca file missing',
      { ...valid(), http: { tls: { ca: '/nonexistent/ca.pem' } } },
      'http.tls.ca',
    ],
    [
      'http.tls key without cert',
      { ...valid(), http: { tls: { key: '-----BEGIN PRIVATE KEY-----' } } },
      'http.tls.cert',
    ],
    [
      'http.tls rejectUnauthorized "no"',
      { ...valid(), http: { tls: { rejectUnauthorized: 'no' } } },
      'http.tls.rejectUnauthorized',
    ],
    ['http.idleWatchMs 10', { ...valid(), http: { idleWatchMs: 10 } }, 'http.idleWatchMs'],
    ['sharding without partitions', { ...valid(), sharding: {} }, 'sharding.partitions'],
    ['sharding partitions 0', { ...valid(), sharding: { partitions: 0 } }, 'sharding.partitions'],
    [
      'sharding partitions 65537',
      { ...valid(), sharding: { partitions: 65_537 } },
      'sharding.partitions',
    ],
    [
      'sharding partitions 2.5',
      { ...valid(), sharding: { partitions: 2.5 } },
      'sharding.partitions',
    ],
    [
      'sharding mode unknown',
      { ...valid(), sharding: { partitions: 8, mode: 'greedy' } },
      'sharding.mode',
    ],
    [
      'exclusive without a TTL check',
      {
        ...valid(),
        healthCheck: { http: 'http://127.0.0.1:3000/health' },
        sharding: { partitions: 8, mode: 'exclusive' },
      },
      'sharding.mode',
    ],
    [
      'exclusive with ttl 1s (a lease of 0 ms)',
      { ...valid(), healthCheck: { ttl: '1s' }, sharding: { partitions: 8, mode: 'exclusive' } },
      'healthCheck.ttl',
    ],
    [
      'exclusive with ttl 3s and intervalRatio 0.9 (a lapse on every beat)',
      {
        ...valid(),
        healthCheck: { ttl: '3s' },
        heartbeat: { intervalRatio: 0.9 },
        sharding: { partitions: 8, mode: 'exclusive' },
      },
      'heartbeat.intervalRatio',
    ],
    [
      'exclusive with ttl 2s (a lease of 1 s, under two beats of 667 ms)',
      { ...valid(), healthCheck: { ttl: '2s' }, sharding: { partitions: 8, mode: 'exclusive' } },
      'heartbeat.intervalRatio',
    ],
    [
      'balanceFactor 2.5',
      { ...valid(), sharding: { partitions: 8, balanceFactor: 2.5 } },
      'sharding.balanceFactor',
    ],
    [
      'balanceFactor 0.9',
      { ...valid(), sharding: { partitions: 8, balanceFactor: 0.9 } },
      'sharding.balanceFactor',
    ],
    ['weight 0', { ...valid(), sharding: { partitions: 8, weight: 0 } }, 'sharding.weight'],
    ['weight 1001', { ...valid(), sharding: { partitions: 8, weight: 1001 } }, 'sharding.weight'],
    [
      'negative settleMs',
      { ...valid(), sharding: { partitions: 8, settleMs: -1 } },
      'sharding.settleMs',
    ],
    [
      'drainTimeoutMs 0',
      { ...valid(), sharding: { partitions: 8, drainTimeoutMs: 0 } },
      'sharding.drainTimeoutMs',
    ],
    [
      'lock prefix with a leading slash',
      { ...valid(), sharding: { partitions: 8, lock: { prefix: '/a' } } },
      'sharding.lock.prefix',
    ],
    [
      'bad lockDelay',
      { ...valid(), sharding: { partitions: 8, lock: { lockDelay: 5 } } },
      'sharding.lock.lockDelay',
    ],
    [
      'unknown sharding key',
      { ...valid(), sharding: { partitions: 8, partition: 3 } },
      'sharding.partition',
    ],
    ['sharding not an object', { ...valid(), sharding: 8 }, 'sharding'],
    [
      'reserved shard meta key',
      { service: { ...service, meta: { shardWeight: '3' } } },
      'service.meta',
    ],
    [
      'sharding without a service port',
      { autoRegister: false, service: { name: 'orders' }, sharding: { partitions: 8 } },
      'service.port',
    ],
    [
      'sharding and 62 meta pairs',
      {
        service: {
          ...service,
          meta: Object.fromEntries(Array.from({ length: 62 }, (_, i) => [`k${i}`, 'v'])),
        },
        sharding: { partitions: 8 },
      },
      'service.meta',
    ],
  ];

  it.each(cases)('rejects %s naming the path', (_label, options, path) => {
    const error = violationOf(options);
    expect(error.paths).toContain(path);
    expect(error.message).toContain(path);
  });

  it('exclusive mode: the lease, ttl − max(1 s, ttl/10), must cover two heartbeats', () => {
    const exclusive = (ttl: string, intervalRatio?: number): DiscoveryModuleOptions =>
      valid({
        healthCheck: { ttl },
        ...(intervalRatio === undefined ? {} : { heartbeat: { intervalRatio } }),
        sharding: { partitions: 8, mode: 'exclusive' },
      });
    // At the edge: 3 s − 1 s = 2 s = 2 × 1/3 × 3 s; 10 s − 1 s = 9 s = 2 × 0.45 × 10 s.
    expect(() => createDiscoverySettings(exclusive('3s'), {})).not.toThrow();
    expect(() => createDiscoverySettings(exclusive('10s', 0.45), {})).not.toThrow();
    expect(violationOf(exclusive('10s', 0.46)).message).toMatch(
      /heartbeat\.intervalRatio must be at most 0\.45 .*healthCheck\.ttl 10s/,
    );
    expect(violationOf(exclusive('2900ms')).paths).toEqual(['heartbeat.intervalRatio']);
    expect(violationOf(exclusive('1s')).message).toMatch(/healthCheck\.ttl must be longer than 1s/);
    // Cooperative mode has no lease: the same timings are accepted.
    expect(() =>
      createDiscoverySettings(
        valid({ healthCheck: { ttl: '1s' }, sharding: { partitions: 8 } }),
        {},
      ),
    ).not.toThrow();
  });

  it('lists every bad path at once, in a readable message', () => {
    const error = violationOf({ service: { name: '', port: 70000 }, consul: { timeoutMs: -1 } });
    expect(error.paths).toEqual(
      expect.arrayContaining(['service.name', 'service.port', 'consul.timeoutMs']),
    );
    expect(error.message).toContain('service.port must not be greater than 65535');
  });

  it('takes the settings at their edges: waitTime 10m, maxSockets + maxLongPolls + 2 = 200, a token with inner spaces', () => {
    const s = createDiscoverySettings(
      valid({
        consul: { maxSockets: 100, token: 'a b\tc' },
        watch: { waitTime: '10m', maxLongPolls: 98 },
      }),
      {},
    );
    expect(s.watch.waitMs).toBe(600_000);
    expect(s.consul.maxSockets + s.watch.maxLongPolls + 2).toBe(200);
  });

  it("names both paths when maxSockets + maxLongPolls + 2 pass the agent's 200", () => {
    const error = violationOf(valid({ consul: { maxSockets: 150 }, watch: { maxLongPolls: 150 } }));
    expect(error.paths).toEqual(
      expect.arrayContaining(['consul.maxSockets', 'watch.maxLongPolls']),
    );
    expect(error.message).toContain('consul.maxSockets + watch.maxLongPolls + 2');
    expect(error.message).toContain('302');
  });

  it('never prints a token that is not a valid header value', () => {
    const token = 'super-secret-token-value\n';
    const error = violationOf({ ...valid(), consul: { token } });
    expect(error.paths).toContain('consul.token');
    expect(error.message).not.toContain(token.trim());
  });

  it('never puts the token in a message', () => {
    const token = 'super-secret-token-value';
    const error = violationOf({ ...valid(), consul: { token, port: 0 } });
    expect(error.message).not.toContain(token);
    const notString = violationOf({ ...valid(), consul: { token: { value: token } } });
    expect(notString.paths).toContain('consul.token');
    expect(notString.message).not.toContain(token);
  });
});
