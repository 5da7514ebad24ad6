import { randomUUID } from 'node:crypto';
import {
  ConsulResponseError,
  DiscoveryService,
  DiscoveryUnavailableError,
  type DiscoveryModuleOptions,
} from '../lib/index.js';
import {
  CapturingLogger,
  FAST_RETRY,
  TestApps,
  backoffBudgetMs,
  errorText,
  startConsulAgent,
  startCountingProxy,
  stopAllAgents,
  waitFor,
  type ConsulAgent,
  type CountingProxy,
} from './support/index.js';

// Boot with the agent down (failFast false: init at once, registration in the background;
// failFast true: rejects after retry.maxAttempts) and with a 4xx (ACL 403) at boot.
// One ACL agent serves the whole file; apps use its master token unless a test says otherwise.
const MASTER = randomUUID();
const TIMEOUT_MS = 1_000;
const MARGIN_MS = 700;

describe('boot', () => {
  const apps = new TestApps();
  let agent: ConsulAgent;
  const proxies: CountingProxy[] = [];
  const savedToken = process.env.CONSUL_HTTP_TOKEN;

  const options = (
    name: string,
    port: number,
    extra: Partial<DiscoveryModuleOptions> & { failFast?: boolean; maxAttempts?: number } = {},
  ): DiscoveryModuleOptions => {
    const { failFast = false, maxAttempts = FAST_RETRY.maxAttempts, ...rest } = extra;
    return {
      consul: { host: '127.0.0.1', port, timeoutMs: TIMEOUT_MS, token: MASTER },
      service: { name, id: `${name}-1`, address: '127.0.0.1', port: 4200 },
      healthCheck: { ttl: '3s' },
      retry: { ...FAST_RETRY, maxAttempts, failFast },
      shutdownTimeoutMs: 1_000,
      ...rest,
    };
  };

  /** Waits until `name-1` is in ?passing; on timeout the error carries the app's log. */
  async function untilPassing(name: string, timeoutMs: number, logger: CapturingLogger) {
    try {
      await waitFor(async () => (await agent.api().passingIds(name)).includes(`${name}-1`), {
        timeoutMs,
        message: `${name}-1 in ?passing`,
      });
    } catch (error) {
      const services = await agent
        .api()
        .agentServices()
        .then((s) => Object.keys(s).join(', '))
        .catch((e: Error) => e.message);
      throw new Error(
        `${(error as Error).message}\nagent services: [${services}]\napp log:\n${logger.all()}`,
        { cause: error },
      );
    }
  }

  beforeAll(async () => {
    delete process.env.CONSUL_HTTP_TOKEN;
    agent = await startConsulAgent({ acl: { masterToken: MASTER } });
  });
  afterEach(async () => {
    await apps.closeAll();
    await Promise.all(proxies.splice(0).map((p) => p.close()));
    await agent.start(); // no-op when running
  });
  afterAll(async () => {
    await stopAllAgents();
    if (savedToken !== undefined) process.env.CONSUL_HTTP_TOKEN = savedToken;
  });

  it('failFast false: init resolves within 300 ms with the agent down, registers once it is up', async () => {
    const name = 'boot-late';
    await agent.stop();
    const logger = new CapturingLogger();
    // Backoff long enough that init waiting for the retries (5 delays of 0–400 ms, ~1 s on
    // average) would miss the bound, which still holds on a loaded machine.
    const retry = { maxAttempts: 6, initialDelayMs: 400, maxDelayMs: 400, failFast: false };
    const app = await apps.create(options(name, agent.httpPort, { retry }), logger);

    const started = performance.now();
    await app.init();
    expect(performance.now() - started).toBeLessThan(300);
    expect(logger.lines('warn').join('\n')).toMatch(/boot-late-1.*retrying in the background/);

    await agent.start();
    const up = performance.now();
    // Background retries are capped at retry.maxDelayMs apart, each bounded by timeoutMs.
    const bound = retry.maxDelayMs + TIMEOUT_MS + MARGIN_MS;
    await untilPassing(name, bound + 2_000, logger);
    expect(performance.now() - up).toBeLessThan(bound);

    await apps.close(app);
    expect(await agent.api().passingIds(name)).toEqual([]);
  });

  it('failFast false: retries without limit, however long the agent stays down', async () => {
    const name = 'boot-long';
    await agent.stop();
    const proxy = await startCountingProxy(agent.httpPort);
    proxies.push(proxy);
    const logger = new CapturingLogger();
    const app = await apps.start(options(name, proxy.port), logger);
    expect(
      await agent
        .api()
        .passingIds(name)
        .catch(() => 'agent down'),
    ).toBe('agent down');
    // Far more connection attempts than retry.maxAttempts: the background loop does not give up.
    await waitFor(() => proxy.totalConnections > 4 * FAST_RETRY.maxAttempts, {
      timeoutMs: 10_000,
      message: 'background registration keeps trying',
    });
    expect(proxy.totalConnections).toBeGreaterThan(4 * FAST_RETRY.maxAttempts);
    expect(logger.lines('warn').join('\n')).toMatch(/boot-long-1.*retrying in the background/);
    expect(logger.lines('error')).toEqual([]);
    await agent.start();
    await untilPassing(name, 5_000, logger);
    expect(await agent.api().passingIds(name)).toEqual([`${name}-1`]);
    await apps.close(app);
    expect(await agent.api().passingIds(name)).toEqual([]);
  });

  it('failFast false: a 4xx at boot (ACL 403) also keeps retrying in the background', async () => {
    const name = 'boot-403-late';
    // A token with no rights yet; it gets service:write while the app is running.
    const token = await agent.api().createAclToken(MASTER, `node_prefix "" { policy = "read" }`);
    const self = await agent.api().request('GET', '/v1/acl/token/self', undefined, token);
    const policy = (self.json as { Policies: { ID: string; Name: string }[] }).Policies[0];
    const logger = new CapturingLogger();
    const base = options(name, agent.httpPort);
    const app = await apps.create({ ...base, consul: { ...base.consul, token } }, logger);

    const started = performance.now();
    await app.init();
    expect(performance.now() - started).toBeLessThan(100);
    expect(logger.lines('warn').join('\n')).toMatch(/HTTP 403: Permission denied/);

    await agent.api().request(
      'PUT',
      `/v1/acl/policy/${policy.ID}`,
      {
        Name: policy.Name,
        Rules: `service "${name}" { policy = "write" }\nnode_prefix "" { policy = "read" }`,
      },
      MASTER,
    );
    await untilPassing(name, 5_000, logger);
    await apps.close(app);
  });

  it('failFast true: init rejects with DiscoveryUnavailableError naming the agent address', async () => {
    await agent.stop();
    const app = await apps.create(options('boot-fail', agent.httpPort, { failFast: true }));
    const started = performance.now();
    const error = await app.init().then(
      () => undefined,
      (e: unknown) => e,
    );
    const ms = performance.now() - started;
    expect(error).toBeInstanceOf(DiscoveryUnavailableError);
    expect((error as DiscoveryUnavailableError).code).toBe('ECONNREFUSED');
    expect((error as Error).message).toContain(`http://127.0.0.1:${agent.httpPort}`);
    // Refused connections are instant: the backoff between attempts is what it may take.
    expect(ms).toBeLessThan(
      FAST_RETRY.maxAttempts * TIMEOUT_MS + backoffBudgetMs(FAST_RETRY) + MARGIN_MS,
    );
  });

  it('failFast true: makes exactly retry.maxAttempts attempts, then stops', async () => {
    await agent.stop();
    // Connections through a proxy in front of the dead port; each is reset at once.
    const connectionsFor = async (maxAttempts: number): Promise<number> => {
      const proxy = await startCountingProxy(agent.httpPort);
      proxies.push(proxy);
      const app = await apps.create(
        options(`boot-count-${maxAttempts}`, proxy.port, { failFast: true, maxAttempts }),
      );
      await expect(app.init()).rejects.toBeInstanceOf(DiscoveryUnavailableError);
      const count = proxy.totalConnections;
      await apps.close(app);
      return count;
    };
    const one = await connectionsFor(1);
    const four = await connectionsFor(4);
    // Whatever one attempt costs in connections (1, or 2 with the client's reset retry),
    // four attempts cost four times that.
    expect([1, 2]).toContain(one);
    expect(four).toBe(4 * one);
  });

  it('failFast true: no background registration after the rejection', async () => {
    await agent.stop();
    const proxy = await startCountingProxy(agent.httpPort);
    proxies.push(proxy);
    const app = await apps.create(options('boot-quiet', proxy.port, { failFast: true }));
    await expect(app.init()).rejects.toBeInstanceOf(DiscoveryUnavailableError);
    const after = proxy.totalConnections;
    await agent.start();
    // Absence has no signal to count here (no timer of the app is left to observe), so a short
    // fixed window: several backoff ceilings (200 ms) and one heartbeat interval (1 s).
    await expect(
      waitFor(() => proxy.totalConnections > after, { timeoutMs: 1_500, message: 'quiet' }),
    ).rejects.toThrow(/quiet/);
    expect(await agent.api().passingIds('boot-quiet')).toEqual([]);
  });

  it('failFast true: an ACL 403 at boot rejects with ConsulResponseError, without retries', async () => {
    const proxy = await startCountingProxy(agent.httpPort);
    proxies.push(proxy);
    const base = options('boot-403', proxy.port, { failFast: true });
    const logger = new CapturingLogger();
    const app = await apps.create(
      { ...base, consul: { ...base.consul, token: undefined } },
      logger,
    );
    const error = await app.init().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ConsulResponseError);
    expect((error as ConsulResponseError).status).toBe(403);
    expect((error as Error).message).toMatch(/Permission denied/);
    expect(proxy.requests('/v1/agent/service/register')).toHaveLength(1);
    expect(errorText(error) + logger.all()).not.toContain(MASTER);
    expect(await agent.api().passingIds('boot-403')).toEqual([]);
  });

  it('boots normally when the agent is up: passing the moment init resolves', async () => {
    const name = 'boot-ok';
    const app = await apps.start(options(name, agent.httpPort, { failFast: true }));
    expect(await agent.api().passingIds(name)).toEqual([`${name}-1`]);
    expect(app.get(DiscoveryService).self.serviceId).toBe(`${name}-1`);
  });
});
