import { randomUUID } from 'node:crypto';
import {
  ConsulResponseError,
  DISCOVERY_PROVIDER,
  DiscoveryService,
  DiscoverySettingsError,
  DiscoveryTimeoutError,
  DiscoveryUnavailableError,
  type DiscoveryModuleOptions,
  type ServiceDiscoveryProtocol,
  type ServiceRegistration,
} from '../lib/index.js';
import {
  CapturingLogger,
  FAST_RETRY,
  TestApps,
  freePort,
  startConsulAgent,
  startCountingProxy,
  stopAllAgents,
  writeBudgetMs,
  type ConsulAgent,
  type CountingProxy,
} from './support/index.js';

// Consul unreachable, slow, and bad input: what register / deregister / discover do, and how
// long they may take, derived from the settings.
const TIMEOUT_MS = 1_000;
const MARGIN_MS = 700;
/** register/deregister: every attempt may time out (twice, with the reset retry) + backoff. */
const WRITE_BOUND_MS = writeBudgetMs(FAST_RETRY, TIMEOUT_MS) + MARGIN_MS;
/** discover: one attempt, plus one immediate retry on a reset socket. */
const READ_BOUND_MS = 2 * TIMEOUT_MS + MARGIN_MS;

const options = (port: number): DiscoveryModuleOptions => ({
  autoRegister: false,
  consul: { host: '127.0.0.1', port, timeoutMs: TIMEOUT_MS },
  retry: FAST_RETRY,
  shutdownTimeoutMs: 1_000,
});

const registration = (name: string): ServiceRegistration => ({
  name,
  serviceId: `${name}-1`,
  address: '127.0.0.1',
  port: 4100,
  healthCheck: { ttl: '3s' },
});

async function timed<T>(work: Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await work;
  return { value, ms: performance.now() - started };
}

async function timedRejection(work: Promise<unknown>): Promise<{ error: unknown; ms: number }> {
  const started = performance.now();
  try {
    await work;
  } catch (error) {
    return { error, ms: performance.now() - started };
  }
  throw new Error('expected a rejection');
}

describe('Consul unreachable, slow, or given bad input', () => {
  const apps = new TestApps();
  let agent: ConsulAgent;
  const proxies: { close(): Promise<void> }[] = [];

  beforeAll(async () => {
    agent = await startConsulAgent();
  });
  afterEach(async () => {
    await apps.closeAll();
    await Promise.all(proxies.splice(0).map((p) => p.close()));
  });
  afterAll(stopAllAgents);

  describe('nothing listening on the Consul port', () => {
    let port: number;
    let logger: CapturingLogger;
    let provider: ServiceDiscoveryProtocol;

    beforeEach(async () => {
      port = await freePort();
      logger = new CapturingLogger();
      const app = await apps.start(options(port), logger);
      provider = app.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
    });

    it(`register resolves false within ${WRITE_BOUND_MS} ms and logs the cause once`, async () => {
      const { value, ms } = await timed(provider.register(registration('unreach-reg')));
      expect(value).toBe(false);
      expect(ms).toBeLessThan(WRITE_BOUND_MS);
      const warnings = logger.lines('warn').filter((l) => l.includes('unreach-reg-1'));
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain(`http://127.0.0.1:${port}`);
      expect(warnings[0]).toMatch(/unreachable/);
    });

    it(`deregister resolves false within ${WRITE_BOUND_MS} ms`, async () => {
      const { value, ms } = await timed(provider.deregister('unreach-dereg-1'));
      expect(value).toBe(false);
      expect(ms).toBeLessThan(WRITE_BOUND_MS);
      expect(logger.lines('warn').filter((l) => l.includes('unreach-dereg-1'))).toHaveLength(1);
    });

    it(`discover rejects with DiscoveryUnavailableError within ${READ_BOUND_MS} ms`, async () => {
      const { error, ms } = await timedRejection(provider.discover('unreach-disc'));
      expect(error).toBeInstanceOf(DiscoveryUnavailableError);
      expect(error).not.toBeInstanceOf(DiscoveryTimeoutError);
      expect((error as DiscoveryUnavailableError).code).toBe('ECONNREFUSED');
      expect((error as Error).message).toContain(`http://127.0.0.1:${port}`);
      expect(ms).toBeLessThan(READ_BOUND_MS);
    });

    it('DiscoveryService.discover rejects the same way', async () => {
      const app = await apps.start(options(port));
      const { error, ms } = await timedRejection(app.get(DiscoveryService).discover('unreach-ds'));
      expect(error).toBeInstanceOf(DiscoveryUnavailableError);
      expect(ms).toBeLessThan(READ_BOUND_MS);
    });
  });

  describe('a slow agent (answers held longer than consul.timeoutMs)', () => {
    let proxy: CountingProxy;
    let provider: ServiceDiscoveryProtocol;

    beforeEach(async () => {
      proxy = await startCountingProxy(agent.httpPort, { delayMs: 3 * TIMEOUT_MS });
      proxies.push(proxy);
      const app = await apps.start(options(proxy.port));
      provider = app.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
    });

    it(`discover rejects with DiscoveryTimeoutError after ~${TIMEOUT_MS} ms`, async () => {
      const { error, ms } = await timedRejection(provider.discover('slow-disc'));
      expect(error).toBeInstanceOf(DiscoveryTimeoutError);
      expect(error).toBeInstanceOf(DiscoveryUnavailableError);
      expect((error as DiscoveryTimeoutError).timeoutMs).toBe(TIMEOUT_MS);
      expect((error as Error).message).toContain(`${TIMEOUT_MS} ms`);
      // A timeout is not a reset: one request, no retry.
      expect(proxy.matching('/v1/health/service/slow-disc')).toHaveLength(1);
      expect(ms).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
      expect(ms).toBeLessThan(TIMEOUT_MS + MARGIN_MS);
    });

    it(`register resolves false within ${WRITE_BOUND_MS} ms after retrying`, async () => {
      const name = 'slow-reg';
      const { value, ms } = await timed(provider.register(registration(name)));
      expect(value).toBe(false);
      expect(ms).toBeLessThan(WRITE_BOUND_MS);
      expect(proxy.matching('/v1/agent/service/register')).toHaveLength(FAST_RETRY.maxAttempts);
      // The agent did get the (idempotent) request; only its answer was late.
      await agent.api().deregisterService(`${name}-1`);
    });
  });

  describe('invalid arguments', () => {
    let proxy: CountingProxy;
    let provider: ServiceDiscoveryProtocol;
    let discovery: DiscoveryService;

    beforeEach(async () => {
      proxy = await startCountingProxy(agent.httpPort);
      proxies.push(proxy);
      const app = await apps.start(options(proxy.port));
      provider = app.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
      discovery = app.get(DiscoveryService);
    });

    const settingsError = async (work: () => Promise<unknown>, path: string): Promise<void> => {
      const { error } = await timedRejection(work());
      expect(error).toBeInstanceOf(DiscoverySettingsError);
      expect((error as DiscoverySettingsError).paths).toContain(path);
      expect((error as Error).message).toContain(path);
    };

    it('reject with DiscoverySettingsError naming the field, before any request', async () => {
      const ok = registration('bad-input');
      await settingsError(
        () => provider.register({ ...ok, name: 'not a dns label' }),
        'registration.name',
      );
      await settingsError(
        () => provider.register({ ...ok, serviceId: '-x' }),
        'registration.serviceId',
      );
      await settingsError(() => provider.register({ ...ok, port: 70_000 }), 'registration.port');
      await settingsError(() => provider.register({ ...ok, port: 1.5 }), 'registration.port');
      await settingsError(
        () => provider.register({ ...ok, address: 'no such host!' }),
        'registration.address',
      );
      await settingsError(() => provider.register({ ...ok, tags: [''] }), 'registration.tags');
      await settingsError(
        () => provider.register({ ...ok, meta: { 'bad key': 'v' } }),
        'registration.meta',
      );
      await settingsError(
        () => provider.register({ ...ok, healthCheck: { ttl: 'abc' } }),
        'registration.healthCheck.ttl',
      );
      await settingsError(
        () => provider.register({ ...ok, healthCheck: { tcp: 'nohostport' } }),
        'registration.healthCheck.tcp',
      );
      await settingsError(() => provider.deregister(''), 'serviceId');
      await settingsError(() => provider.deregister(42 as unknown as string), 'serviceId');
      await settingsError(() => provider.discover('under_score'), 'name');
      await settingsError(() => provider.discover(''), 'name');
      await settingsError(() => provider.discover('ok-name', { tag: '' }), 'query.tag');
      await settingsError(
        () => provider.discover('ok-name', { datacenter: 'dc 1' }),
        'query.datacenter',
      );
      await settingsError(() => discovery.discover('under_score'), 'name');
      expect(() => discovery.watch('under_score')).toThrow(DiscoverySettingsError);
      expect(() => discovery.snapshot('under_score')).toThrow(DiscoverySettingsError);

      expect(proxy.requestLines).toEqual([]);
      expect(proxy.totalConnections).toBe(0);

      // The same provider does reach the agent through the proxy with valid input.
      await expect(provider.discover(`unknown-${randomUUID().slice(0, 8)}`)).resolves.toEqual([]);
      expect(proxy.requests('/v1/health/service/')).toHaveLength(1);
    });

    it('register(undefined) also rejects with DiscoverySettingsError, not a TypeError', async () => {
      await settingsError(
        () => provider.register(undefined as unknown as ServiceRegistration),
        'registration',
      );
      await settingsError(
        () => provider.register(null as unknown as ServiceRegistration),
        'registration',
      );
      expect(proxy.totalConnections).toBe(0);
    });

    it('an error answer from Consul (unknown datacenter) is a ConsulResponseError', async () => {
      // `dc` that does not exist: the agent answers 500 "No path to datacenter".
      const { error } = await timedRejection(provider.discover('x', { datacenter: 'nowhere' }));
      expect(error).toBeInstanceOf(ConsulResponseError);
      expect((error as ConsulResponseError).status).toBeGreaterThanOrEqual(400);
    });
  });
});
