import 'reflect-metadata';
import type { INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { TestingModule } from '@nestjs/testing';
import {
  DISCOVERY_PROVIDER,
  DiscoveryModule,
  DiscoveryService,
  DiscoverySettingsError,
  type DiscoveryModuleOptions,
  type ServiceDiscoveryProtocol,
} from '../lib/index.js';
import {
  SILENT_LOGGER,
  TestApps,
  startConsulAgent,
  startCountingProxy,
  stopAllAgents,
  type ConsulAgent,
  type CountingProxy,
} from './support/index.js';

// Malformed settings and arguments against a real agent behind a counting proxy: each one is a
// DiscoverySettingsError naming the field, nothing crashes, Object.prototype stays clean, and the
// agent never hears about any of them (validation happens before any I/O).

const KB10 = 'a'.repeat(10_240);
const proto = (json: string): Record<string, unknown> =>
  JSON.parse(json) as Record<string, unknown>;

/** Cases whose options go through forRootAsync's factory, i.e. reach the library unchanged. */
const ASYNC = new WeakSet<() => unknown>();
const viaAsync = (make: () => unknown): (() => unknown) => {
  ASYNC.add(make);
  return make;
};

function prototypeFingerprint(): string {
  return JSON.stringify(
    [Object.prototype, Array.prototype, Function.prototype].map((p) =>
      Object.getOwnPropertyNames(p).sort(),
    ),
  );
}

function expectClean(): void {
  const probe = {} as Record<string, unknown>;
  for (const key of ['polluted', 'bad', 'x', 'prototype']) expect(probe[key]).toBeUndefined();
  expect(([] as unknown as Record<string, unknown>).polluted).toBeUndefined();
}

/** The settings error thrown or rejected by `work` (sync throw or rejected promise). */
async function settingsError(work: () => unknown): Promise<DiscoverySettingsError> {
  let outcome: unknown;
  try {
    await work();
    outcome = 'resolved';
  } catch (error) {
    outcome = error;
  }
  if (!(outcome instanceof DiscoverySettingsError)) {
    throw new Error(`expected a DiscoverySettingsError, got ${String(outcome)}`);
  }
  return outcome;
}

describe('bad input: settings and arguments are rejected before any I/O', () => {
  const apps = new TestApps(() => SILENT_LOGGER);
  let agent: ConsulAgent;
  let proxy: CountingProxy;
  let before: string;

  const base = (): DiscoveryModuleOptions => ({
    consul: { host: '127.0.0.1', port: proxy.port, timeoutMs: 1_000 },
    service: { name: 'bad-input', port: 4300, address: '127.0.0.1' },
    retry: { maxAttempts: 1, initialDelayMs: 10, maxDelayMs: 10 },
    shutdownTimeoutMs: 1_000,
  });
  const withService = (service: Record<string, unknown>) => (): unknown => ({
    ...base(),
    service: { ...base().service, ...service },
  });
  const withConsul = (consul: Record<string, unknown>) => (): unknown => ({
    ...base(),
    consul: { ...base().consul, ...consul },
  });
  const withRoot = (extra: Record<string, unknown>) => (): unknown => ({ ...base(), ...extra });

  beforeAll(async () => {
    before = prototypeFingerprint();
    agent = await startConsulAgent();
    proxy = await startCountingProxy(agent.httpPort);
  });

  afterAll(async () => {
    await apps.closeAll();
    await proxy?.close();
    await stopAllAgents();
  });

  describe('settings: app creation rejects, the agent sees nothing', () => {
    const cases: [string, () => unknown, string][] = [
      // ports
      ['service.port 0', withService({ port: 0 }), 'service.port'],
      ['service.port -1', withService({ port: -1 }), 'service.port'],
      ['service.port 65536', withService({ port: 65536 }), 'service.port'],
      ['service.port 1.5', withService({ port: 1.5 }), 'service.port'],
      ['service.port NaN', withService({ port: NaN }), 'service.port'],
      ["service.port '80'", withService({ port: '80' }), 'service.port'],
      ['consul.port 0', withConsul({ port: 0 }), 'consul.port'],
      ['consul.port -1', withConsul({ port: -1 }), 'consul.port'],
      ['consul.port 65536', withConsul({ port: 65536 }), 'consul.port'],
      ['consul.port 1.5', withConsul({ port: 1.5 }), 'consul.port'],
      ['consul.port NaN', withConsul({ port: NaN }), 'consul.port'],
      ["consul.port '8500'", withConsul({ port: '8500' }), 'consul.port'],
      // names
      ['name with a space', withService({ name: 'my service' }), 'service.name'],
      ['name with a slash', withService({ name: 'orders/v1' }), 'service.name'],
      ['name with ../', withService({ name: '../etc' }), 'service.name'],
      ['unicode name (accent)', withService({ name: 'zürich' }), 'service.name'],
      ['unicode name (CJK)', withService({ name: '服务' }), 'service.name'],
      ['unicode name (emoji)', withService({ name: 'orders-🚀' }), 'service.name'],
      ['name of 10 kB', withService({ name: KB10 }), 'service.name'],
      ['name a number', withService({ name: 42 }), 'service.name'],
      // 10 kB strings elsewhere
      ['tag of 10 kB', withService({ tags: [KB10] }), 'service.tags'],
      ['meta value of 10 kB', withService({ meta: { big: KB10 } }), 'service.meta'],
      ['id of 10 kB', withService({ id: KB10 }), 'service.id'],
      ['consul.host of 10 kB', withConsul({ host: KB10 }), 'consul.host'],
      // prototype pollution
      [
        'meta with a __proto__ key',
        withService({ meta: proto('{"__proto__": {"polluted": "meta"}}') }),
        'service.meta',
      ],
      [
        'meta with a constructor key',
        withService({ meta: proto('{"constructor": "x"}') }),
        'service.meta',
      ],
      [
        // forRoot() copies options key by key (Nest's omitExtras), which turns an own
        // "__proto__" key into the copy's prototype: the library sees a non-plain object.
        'settings root with a __proto__ key (forRoot)',
        () => ({ ...proto('{"__proto__": {"polluted": "root"}}'), ...base() }),
        'options',
      ],
      [
        'settings root with a __proto__ key (forRootAsync: the key reaches the library)',
        viaAsync(() => ({ ...proto('{"__proto__": {"polluted": "root"}}'), ...base() })),
        '__proto__',
      ],
      [
        'service section with a __proto__ key',
        () => ({
          ...base(),
          service: { ...proto('{"__proto__": {"polluted": "service"}}'), ...base().service },
        }),
        'service.__proto__',
      ],
      [
        'consul section with constructor.prototype',
        () => ({
          ...base(),
          consul: {
            ...proto('{"constructor": {"prototype": {"polluted": "consul"}}}'),
            ...base().consul,
          },
        }),
        'consul.constructor',
      ],
      [
        'healthCheck header with a __proto__ key',
        withRoot({
          healthCheck: {
            http: 'http://127.0.0.1:4300/health',
            header: proto('{"__proto__": ["polluted"]}'),
          },
        }),
        'healthCheck.header',
      ],
      [
        'healthCheck with a __proto__ key',
        withRoot({ healthCheck: proto('{"ttl": "10s", "__proto__": {"polluted": "check"}}') }),
        'healthCheck.__proto__',
      ],
      // durations
      ['ttl -1s', withRoot({ healthCheck: { ttl: '-1s' } }), 'healthCheck.ttl'],
      ['ttl 1y', withRoot({ healthCheck: { ttl: '1y' } }), 'healthCheck.ttl'],
      ['ttl abc', withRoot({ healthCheck: { ttl: 'abc' } }), 'healthCheck.ttl'],
      ['ttl 0s', withRoot({ healthCheck: { ttl: '0s' } }), 'healthCheck.ttl'],
      ['ttl a number', withRoot({ healthCheck: { ttl: 10 } }), 'healthCheck.ttl'],
      [
        'http interval -1s',
        withRoot({ healthCheck: { http: 'http://127.0.0.1:4300/h', interval: '-1s' } }),
        'healthCheck.interval',
      ],
      [
        'tcp timeout 1y',
        withRoot({ healthCheck: { tcp: '127.0.0.1:4300', timeout: '1y' } }),
        'healthCheck.timeout',
      ],
      [
        'deregisterCriticalServiceAfter abc',
        withRoot({ healthCheck: { ttl: '10s', deregisterCriticalServiceAfter: 'abc' } }),
        'healthCheck.deregisterCriticalServiceAfter',
      ],
      ['watch.waitTime 0s', withRoot({ watch: { waitTime: '0s' } }), 'watch.waitTime'],
      ['watch.waitTime 600h', withRoot({ watch: { waitTime: '600h' } }), 'watch.waitTime'],
      [
        'maxSockets 150 + maxLongPolls 150',
        () => ({
          ...base(),
          consul: { ...base().consul, maxSockets: 150 },
          watch: { maxLongPolls: 150 },
        }),
        'watch.maxLongPolls',
      ],
      ['consul.token "t\\n"', withConsul({ token: 'secret-token\n' }), 'consul.token'],
      // tags that are not strings
      ['tags [5]', withService({ tags: [5] }), 'service.tags'],
      ['tags [null]', withService({ tags: [null] }), 'service.tags'],
      ['tags [["a"]]', withService({ tags: [['a']] }), 'service.tags'],
      ['tags "a,b"', withService({ tags: 'a,b' }), 'service.tags'],
      // unknown health check shapes
      ['grpc check', withRoot({ healthCheck: { grpc: '127.0.0.1:1' } }), 'healthCheck'],
      ['script check', withRoot({ healthCheck: { args: ['/bin/true'] } }), 'healthCheck'],
      [
        'ttl + http check',
        withRoot({ healthCheck: { ttl: '10s', http: 'http://127.0.0.1:1/' } }),
        'healthCheck',
      ],
      ['empty check', withRoot({ healthCheck: {} }), 'healthCheck'],
      ['check a string', withRoot({ healthCheck: 'ttl' }), 'healthCheck'],
      // null / undefined / array where an object is expected
      ['healthCheck null', withRoot({ healthCheck: null }), 'healthCheck'],
      ['healthCheck []', withRoot({ healthCheck: [] }), 'healthCheck'],
      ['service null', withRoot({ service: null }), 'service'],
      ['service []', withRoot({ service: [] }), 'service'],
      ['consul null', withRoot({ consul: null }), 'consul'],
      ['retry []', withRoot({ retry: [] }), 'retry'],
      ['watch "x"', withRoot({ watch: 'x' }), 'watch'],
      ['meta []', withService({ meta: [] }), 'service.meta'],
      ['meta null', withService({ meta: null }), 'service.meta'],
      ['options [] (forRootAsync)', viaAsync(() => []), 'options'],
      ['options "x" (forRootAsync)', viaAsync(() => 'x'), 'options'],
      ['options null (forRootAsync; service required)', viaAsync(() => null), 'service.name'],
      ['options undefined (forRootAsync)', viaAsync(() => undefined), 'service.name'],
      ['service.port undefined (required)', withService({ port: undefined }), 'service.port'],
      // other wrong types / values
      ['enabled "yes"', withRoot({ enabled: 'yes' }), 'enabled'],
      ['autoRegister 1', withRoot({ autoRegister: 1 }), 'autoRegister'],
      ['consul.token 42', withConsul({ token: 42 }), 'consul.token'],
      ['consul.timeoutMs NaN', withConsul({ timeoutMs: NaN }), 'consul.timeoutMs'],
      ['consul.secure "true"', withConsul({ secure: 'true' }), 'consul.secure'],
      ['datacenter "dc 1"', withConsul({ datacenter: 'dc 1' }), 'consul.datacenter'],
      ['65 meta pairs', withService({ meta: manyMeta(65) }), 'service.meta'],
      ['meta key with a space', withService({ meta: { 'a b': 'x' } }), 'service.meta'],
      ['meta value a number', withService({ meta: { a: 1 } }), 'service.meta'],
      ['watch.services ["a b"]', withRoot({ watch: { services: ['a b'] } }), 'watch.services'],
      [
        'heartbeat.intervalRatio NaN',
        withRoot({ heartbeat: { intervalRatio: NaN } }),
        'heartbeat.intervalRatio',
      ],
      ['unknown root key', withRoot({ servce: {} }), 'servce'],
      // exclusive sharding: the lease must cover two heartbeats
      [
        'exclusive sharding with ttl 1s',
        withRoot({ healthCheck: { ttl: '1s' }, sharding: { partitions: 8, mode: 'exclusive' } }),
        'healthCheck.ttl',
      ],
      [
        'exclusive sharding with intervalRatio 0.9',
        withRoot({
          healthCheck: { ttl: '3s' },
          heartbeat: { intervalRatio: 0.9 },
          sharding: { partitions: 8, mode: 'exclusive' },
        }),
        'heartbeat.intervalRatio',
      ],
    ];

    it.each(cases.map(([label, make, path]) => [label, path, make] as const))(
      '%s → DiscoverySettingsError naming %s',
      async (_label, path, make) => {
        const options = make() as DiscoveryModuleOptions;
        let compiled: TestingModule | undefined;
        const error = await settingsError(async () => {
          compiled = await apps.compile({
            imports: [
              ASYNC.has(make)
                ? DiscoveryModule.forRootAsync({ useFactory: () => options })
                : DiscoveryModule.forRoot(options),
            ],
          });
          // Validation was missed: boot it, so the proxy sees what it sends, then fail.
          await compiled.init().catch(() => undefined);
          await apps.close(compiled);
        });
        expect(compiled).toBeUndefined();
        expect(error).toBeInstanceOf(DiscoverySettingsError);
        expect(error.paths).toContain(path);
        expect(error.message).toContain(path);
        expect(error.message).toMatch(/^Invalid DiscoveryModule settings: /);
        expect(error.message.length).toBeLessThan(4_000); // a 10 kB value is not echoed back
        expectClean();
        // Nothing reached the agent: no connection, no request through the counting proxy.
        expect(proxy.totalConnections).toBe(0);
        expect(proxy.requestLines).toEqual([]);
      },
    );

    it('forRootAsync and NestFactory reject the same way (no process exit, no I/O)', async () => {
      const bad = { ...base(), service: { ...base().service, port: 65536 } };
      const asyncError = await settingsError(() =>
        apps.compile({
          imports: [DiscoveryModule.forRootAsync({ useFactory: () => Promise.resolve(bad) })],
        }),
      );
      expect(asyncError.paths).toEqual(['service.port']);
      expect(asyncError.message).toContain('service.port must not be greater than 65535');

      const factoryError = await settingsError(() =>
        NestFactory.createApplicationContext(DiscoveryModule.forRoot(bad), {
          logger: false,
          abortOnError: false,
        }),
      );
      expect(factoryError.paths).toEqual(['service.port']);

      // Every bad path at once.
      const many = await settingsError(() =>
        apps.compile({
          imports: [
            DiscoveryModule.forRoot({
              ...base(),
              service: { name: 'a b', port: 0, tags: [5] as unknown as string[] },
              healthCheck: { ttl: '1y' },
            }),
          ],
        }),
      );
      expect(many.paths).toEqual(
        expect.arrayContaining(['service.name', 'service.port', 'service.tags', 'healthCheck.ttl']),
      );
      expect(proxy.totalConnections).toBe(0);
    });
  });

  describe('arguments: each call rejects, the agent sees nothing more', () => {
    let app: INestApplicationContext;
    let provider: ServiceDiscoveryProtocol;
    let service: DiscoveryService;
    let connections: number;
    let requests: number;

    beforeAll(async () => {
      app = await NestFactory.createApplicationContext(
        DiscoveryModule.forRoot({ ...base(), autoRegister: false, service: undefined }),
        { logger: SILENT_LOGGER, abortOnError: false },
      );
      provider = app.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
      service = app.get(DiscoveryService);
      // A valid call first, so the proxy demonstrably counts this app's traffic.
      expect(await provider.discover('bad-input')).toEqual([]);
      connections = proxy.totalConnections;
      requests = proxy.requestLines.length;
      expect(connections).toBeGreaterThan(0);
    });

    afterAll(async () => {
      await app?.close();
    });

    const valid = { name: 'orders', serviceId: 'orders-1', port: 4301, address: '127.0.0.1' };
    const reg = (value: unknown) => () => provider.register(value as never);
    const cases: [string, () => unknown, string][] = [
      ['register({})', reg({}), 'registration.name'],
      [
        'register() without port',
        reg({ name: 'orders', serviceId: 'orders-1' }),
        'registration.port',
      ],
      ['register() without serviceId', reg({ name: 'orders', port: 1 }), 'registration.serviceId'],
      ['register() without name', reg({ serviceId: 'orders-1', port: 1 }), 'registration.name'],
      ["register() port '80'", reg({ ...valid, port: '80' }), 'registration.port'],
      ['register() port 0', reg({ ...valid, port: 0 }), 'registration.port'],
      ['register() port 65536', reg({ ...valid, port: 65536 }), 'registration.port'],
      ['register() port 1.5', reg({ ...valid, port: 1.5 }), 'registration.port'],
      ['register() port NaN', reg({ ...valid, port: NaN }), 'registration.port'],
      ['register() name with a slash', reg({ ...valid, name: 'a/b' }), 'registration.name'],
      ['register() unicode name', reg({ ...valid, name: 'zürich' }), 'registration.name'],
      ['register() name of 10 kB', reg({ ...valid, name: KB10 }), 'registration.name'],
      ['register() id of 10 kB', reg({ ...valid, serviceId: KB10 }), 'registration.serviceId'],
      ['register() tags [5]', reg({ ...valid, tags: [5] }), 'registration.tags'],
      ['register() tag of 10 kB', reg({ ...valid, tags: [KB10] }), 'registration.tags'],
      [
        'register() meta __proto__',
        reg({ ...valid, meta: proto('{"__proto__": {"polluted": "arg"}}') }),
        'registration.meta',
      ],
      ['register() meta value 10 kB', reg({ ...valid, meta: { k: KB10 } }), 'registration.meta'],
      [
        'register() check ttl 1y',
        reg({ ...valid, healthCheck: { ttl: '1y' } }),
        'registration.healthCheck.ttl',
      ],
      [
        'register() check of unknown shape',
        reg({ ...valid, healthCheck: { grpc: '127.0.0.1:1' } }),
        'registration.healthCheck',
      ],
      [
        'register() check header __proto__',
        reg({
          ...valid,
          healthCheck: { http: 'http://127.0.0.1:1/h', header: proto('{"__proto__": ["x"]}') },
        }),
        'registration.healthCheck.header',
      ],
      ['register() unknown key', reg({ ...valid, extra: 1 }), 'registration.extra'],
      ['register(null)', reg(null), 'registration'],
      ['register(undefined)', reg(undefined), 'registration'],
      ['register([])', reg([]), 'registration'],
      ["register('orders')", reg('orders'), 'registration'],
      ["deregister('')", () => provider.deregister(''), 'serviceId'],
      ['deregister(42)', () => provider.deregister(42 as never), 'serviceId'],
      ['deregister(undefined)', () => provider.deregister(undefined as never), 'serviceId'],
      ["deregister('a b')", () => provider.deregister('a b'), 'serviceId'],
      ["deregister('../x')", () => provider.deregister('../x'), 'serviceId'],
      ['deregister(10 kB)', () => provider.deregister(KB10), 'serviceId'],
      ["discover('a b')", () => provider.discover('a b'), 'name'],
      ["discover('')", () => provider.discover(''), 'name'],
      ['discover(42)', () => provider.discover(42 as never), 'name'],
      ["discover('a/b')", () => provider.discover('a/b'), 'name'],
      ['discover(10 kB)', () => provider.discover(KB10), 'name'],
      [
        'discover(name, { tag: 5 })',
        () => provider.discover('orders', { tag: 5 } as never),
        'query.tag',
      ],
      ["discover(name, { tag: '' })", () => provider.discover('orders', { tag: '' }), 'query.tag'],
      [
        "discover(name, { datacenter: 'dc 1' })",
        () => provider.discover('orders', { datacenter: 'dc 1' }),
        'query.datacenter',
      ],
      [
        'discover(name, { foo: 1 })',
        () => provider.discover('orders', { foo: 1 } as never),
        'query.foo',
      ],
      ["discover(name, 'tag')", () => provider.discover('orders', 'tag' as never), 'query'],
      ["DiscoveryService.discover('a b')", () => service.discover('a b'), 'name'],
      ["DiscoveryService.watch('a b')", () => service.watch('a b'), 'name'],
      [
        'DiscoveryService.watch(name, { tag: 5 })',
        () => service.watch('x', { tag: 5 } as never),
        'query.tag',
      ],
      ["DiscoveryService.snapshot('a/b')", () => service.snapshot('a/b'), 'name'],
      ['DiscoveryService.freshness(42)', () => service.freshness(42 as never), 'name'],
      [
        'DiscoveryService.deregisterSelf() without a service',
        () => service.deregisterSelf(),
        'service.name',
      ],
      ['DiscoveryService.self without a service', () => service.self, 'service.name'],
    ];

    it.each(cases.map(([label, call, path]) => [label, path, call] as const))(
      '%s → DiscoverySettingsError naming %s',
      async (_label, path, call) => {
        const error = await settingsError(call);
        expect(error).toBeInstanceOf(DiscoverySettingsError);
        expect(error.paths).toContain(path);
        expect(error.message).toContain(path);
        expect(error.message.length).toBeLessThan(4_000);
        expectClean();
        // Nothing more reached the agent through the counting proxy.
        expect(proxy.totalConnections).toBe(connections);
        expect(proxy.requestLines.slice(requests)).toEqual([]);
      },
    );

    it('registerSelf() without a service rejects like deregisterSelf(), with no I/O', async () => {
      const error = await service.registerSelf().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(DiscoverySettingsError);
      expect((error as DiscoverySettingsError).paths).toContain('service.name');
      expect(proxy.totalConnections).toBe(connections);
      expect(proxy.requestLines.length).toBe(requests);
    });

    it('the app still works after all of them', async () => {
      await agent.api().registerService({
        Name: 'bad-input',
        ID: 'bad-input-1',
        Address: '127.0.0.1',
        Port: 4302,
        Check: { TTL: '60s', Status: 'passing' },
      });
      expect((await provider.discover('bad-input')).map((i) => i.serviceId)).toEqual([
        'bad-input-1',
      ]);
      expect(
        await provider.register({ ...valid, name: 'bad-input', serviceId: 'bad-input-2' }),
      ).toBe(true);
      expect(await provider.deregister('bad-input-2')).toBe(true);
      expect(proxy.requestLines.length).toBeGreaterThan(requests);
    });
  });

  it('left Object.prototype (and friends) untouched', () => {
    expectClean();
    expect(prototypeFingerprint()).toBe(before);
  });
});

function manyMeta(n: number): Record<string, string> {
  return Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, 'v']));
}
