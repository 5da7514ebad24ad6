import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { inspect } from 'node:util';
import type { INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { TestingModule } from '@nestjs/testing';
import { firstValueFrom, filter, take, timeout } from 'rxjs';
import {
  CONSUL_CLIENT,
  ConsulResponseError,
  DISCOVERY_PROVIDER,
  DiscoveryModule,
  DiscoveryService,
  type ConsulClient,
  type DiscoveryModuleOptions,
  type ServiceDiscoveryProtocol,
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

// ACL reliability against a real 1.8.7 agent (default deny): refusals are clear 403s, a scoped
// token works end to end, and no token ever shows up in a log line, an error or a request line.

const MASTER = `master-${randomUUID()}`;
const UNKNOWN = randomUUID(); // well-formed, but no such token on the agent
const NAME = 'orders';

describe('ACL (default deny) reliability', () => {
  let agent: ConsulAgent;
  let proxy: CountingProxy;
  let wrongToken: string; // write on another service only
  let scopedToken: string; // write on "orders" + the reads discovery needs
  let retryToken = ''; // refused at first, granted later
  const logger = new CapturingLogger();
  /** Every rendering of every error the library handed us. */
  const errorTexts: string[] = [];
  const testApps = new TestApps(() => logger);
  /** Apps made with NestFactory (not through testApps). */
  const apps: { close(): Promise<unknown> }[] = [];

  const record = (error: unknown): unknown => {
    errorTexts.push(
      String(error),
      (error as Error).message ?? '',
      (error as Error).stack ?? '',
      JSON.stringify(error) ?? '',
      inspect(error, { depth: 10, showHidden: true }),
    );
    return error;
  };

  /** What `work` rejects with (undefined if it resolves), recorded for the leak check. */
  const rejection = async (work: Promise<unknown>): Promise<unknown> =>
    record(
      await work.then(
        () => undefined,
        (e: unknown) => e,
      ),
    );

  const options = (token: string | undefined, extra: DiscoveryModuleOptions = {}) =>
    ({
      consul: { host: '127.0.0.1', port: proxy.port, token, timeoutMs: 3_000 },
      service: { name: NAME, port: 4100, address: '127.0.0.1' },
      retry: { maxAttempts: 3, initialDelayMs: 20, maxDelayMs: 50 },
      shutdownTimeoutMs: 2_000,
      ...extra,
    }) satisfies DiscoveryModuleOptions;

  /** Compiled but not initialised, so a rejecting bootstrap can still be closed. */
  const compile = (opts: DiscoveryModuleOptions): Promise<TestingModule> => testApps.create(opts);

  beforeAll(async () => {
    agent = await startConsulAgent({ acl: { masterToken: MASTER } });
    proxy = await startCountingProxy(agent.httpPort);
    const api = agent.api();
    wrongToken = await api.createAclToken(
      MASTER,
      'service "payments" { policy = "write" }\nnode_prefix "" { policy = "read" }',
    );
    scopedToken = await api.createAclToken(
      MASTER,
      `service "${NAME}" { policy = "write" }\nnode_prefix "" { policy = "read" }`,
    );
  });

  afterEach(async () => {
    await Promise.all(apps.splice(0).map((app) => app.close()));
    await testApps.closeAll();
  });

  afterAll(async () => {
    await proxy?.close();
    await stopAllAgents();
  });

  it('failFast boot with a token lacking service:write rejects with a clear 403 ConsulResponseError', async () => {
    const before = proxy.requests('/v1/agent/service/register').length;
    const moduleRef = await compile(options(wrongToken, { retry: { failFast: true } }));
    const error = await rejection(moduleRef.init());
    expect(error).toBeInstanceOf(ConsulResponseError);
    const refused = error as ConsulResponseError;
    expect(refused.status).toBe(403);
    expect(refused.consulMessage).toMatch(/Permission denied/);
    expect(refused.message).toMatch(/HTTP 403/);
    expect(refused.message).toContain(`service:write on ${NAME}`);
    // A 4xx is not retried, even with failFast and maxAttempts 3.
    expect(proxy.requests('/v1/agent/service/register').length - before).toBe(1);
    const raw = await agent.api().agentServices();
    expect(Object.values(raw).filter((s) => s.Service === NAME)).toEqual([]);
  });

  it('register() through the provider resolves false and logs the cause once', async () => {
    const moduleRef = await compile(options(wrongToken, { autoRegister: false }));
    await moduleRef.init();
    const provider = moduleRef.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
    const from = logger.entries.length;
    const before = proxy.requests('/v1/agent/service/register').length;
    const ok = await provider.register({
      name: NAME,
      serviceId: 'orders-acl-1',
      port: 4101,
      address: '127.0.0.1',
      healthCheck: { ttl: '30s' },
    });
    expect(ok).toBe(false);
    expect(proxy.requests('/v1/agent/service/register').length - before).toBe(1);
    const mentions = logger.entries.slice(from).filter((e) => e.text.includes('orders-acl-1'));
    expect(mentions).toHaveLength(1);
    expect(mentions[0].level).toBe('warn');
    expect(mentions[0].text).toMatch(/HTTP 403/);
    expect(mentions[0].text).toContain(`service:write on ${NAME}`);

    // Reads with a token that cannot read the name are filtered, not refused (Consul's rule).
    await agent.api().registerService({
      Name: NAME,
      ID: 'orders-raw-1',
      Address: '127.0.0.1',
      Port: 4102,
      Check: { TTL: '60s', Status: 'passing' },
    });
    try {
      expect(await provider.discover(NAME)).toEqual([]);
    } finally {
      await agent.api().deregisterService('orders-raw-1');
    }
  });

  it('a token scoped to the service registers, heartbeats, discovers and watches', async () => {
    const app: INestApplicationContext = await NestFactory.createApplicationContext(
      DiscoveryModule.forRoot(
        options(scopedToken, {
          retry: { failFast: true, maxAttempts: 3, initialDelayMs: 20, maxDelayMs: 50 },
          healthCheck: { ttl: '2s', deregisterCriticalServiceAfter: '1m' },
          heartbeat: { intervalRatio: 0.25 },
          watch: { waitTime: '5s' },
        }),
      ),
      { logger, abortOnError: false },
    );
    apps.push(app);
    const service = app.get(DiscoveryService);
    const provider = app.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
    const id = service.self.serviceId;
    const api = agent.api();

    // Registered passing at once.
    const passing = await api.healthService(NAME, { passing: true });
    expect(passing.map((e) => e.Service.ID)).toEqual([id]);
    expect((await provider.discover(NAME)).map((i) => i.serviceId)).toEqual([id]);

    // Heartbeat: a check failed behind our back comes back passing through the scoped token.
    await api.failTtl(`service:${id}`, 'failed by the test');
    expect(await api.healthService(NAME, { passing: true })).toEqual([]);
    await waitFor(async () => (await api.healthService(NAME, { passing: true })).length === 1, {
      timeoutMs: 8_000,
      message: 'heartbeat did not bring the check back to passing',
    });
    const passes = proxy.requests(/\/v1\/agent\/check\/pass\/service(:|%3A)/i);
    expect(passes.length).toBeGreaterThan(0);

    // Watch works with the token too, and sees a second instance registered by the master.
    const seen = firstValueFrom(
      service.watch(NAME).pipe(
        filter((set) => set.length === 2),
        take(1),
        timeout(10_000),
      ),
    );
    await api.registerService({
      Name: NAME,
      ID: 'orders-raw-2',
      Address: '127.0.0.1',
      Port: 4103,
      Check: { TTL: '60s', Status: 'passing' },
    });
    try {
      expect((await seen).map((i) => i.serviceId)).toEqual([id, 'orders-raw-2'].sort());
      // Another service's instances are filtered for this token (read is scoped to "orders").
      expect(await provider.discover('payments')).toEqual([]);
    } finally {
      await api.deregisterService('orders-raw-2');
    }

    // A clean exit deregisters through the token.
    await app.close();
    apps.splice(apps.indexOf(app), 1);
    expect(await api.healthService(NAME)).toEqual([]);
    expect(app.get<ConsulClient>(CONSUL_CLIENT).inflightCount).toBe(0);
  });

  it('an unknown token gives a clear 403 "ACL not found" for boot, register and discover', async () => {
    const failFast = await compile(options(UNKNOWN, { retry: { failFast: true } }));
    const bootError = await rejection(failFast.init());
    expect(bootError).toBeInstanceOf(ConsulResponseError);
    expect((bootError as ConsulResponseError).status).toBe(403);
    expect((bootError as ConsulResponseError).consulMessage).toMatch(/ACL not found/);
    expect((bootError as Error).message).toMatch(/HTTP 403: ACL not found/);

    const moduleRef = await compile(options(UNKNOWN, { autoRegister: false }));
    await moduleRef.init();
    const provider = moduleRef.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
    const from = logger.entries.length;
    expect(await provider.register({ name: NAME, serviceId: 'orders-acl-2', port: 4104 })).toBe(
      false,
    );
    const mentions = logger
      .lines()
      .slice(from)
      .filter((line) => line.includes('orders-acl-2'));
    expect(mentions).toHaveLength(1);
    expect(mentions[0]).toMatch(/HTTP 403: ACL not found/);

    const discoverError = await rejection(provider.discover(NAME));
    expect(discoverError).toBeInstanceOf(ConsulResponseError);
    expect((discoverError as ConsulResponseError).status).toBe(403);
    expect((discoverError as Error).message).toMatch(/ACL not found/);

    // Deregister with an unknown token: refused (not "already gone"), reported as false.
    expect(await provider.deregister('orders-acl-2')).toBe(false);
  });

  it('a default boot (failFast false) with a refused token completes, logs the cause and retries until the token is granted', async () => {
    // Its own token, so granting it later affects nothing else.
    const api = agent.api();
    retryToken = await api.createAclToken(
      MASTER,
      'service "payments" { policy = "write" }\nnode_prefix "" { policy = "read" }',
    );
    const moduleRef = await compile(
      options(retryToken, { retry: { maxAttempts: 3, initialDelayMs: 20, maxDelayMs: 100 } }),
    );
    const from = logger.entries.length;
    const before = proxy.requests('/v1/agent/service/register').length;
    await moduleRef.init(); // completes at once
    const cause = logger
      .lines()
      .slice(from)
      .filter((line) => /HTTP 403/.test(line));
    expect(cause.length).toBeGreaterThanOrEqual(1);
    expect(cause[0]).toContain(`service:write on ${NAME}`);

    // README "Behaviour" → "Boot": registration keeps retrying in the background without
    // limit (capped backoff; 4xx included) until it succeeds or the app shuts down.
    await waitFor(() => proxy.requests('/v1/agent/service/register').length - before >= 3, {
      timeoutMs: 5_000,
      message: `background registration did not keep retrying after a 403 (log: ${JSON.stringify(
        logger.lines().slice(from),
      )})`,
    });

    // Grant the permission: the background registration gets through.
    const self = await api.request('GET', '/v1/acl/token/self', undefined, retryToken);
    const policyId = (self.json as { Policies: { ID: string; Name: string }[] }).Policies[0];
    const updated = await api.request(
      'PUT',
      `/v1/acl/policy/${policyId.ID}`,
      {
        ID: policyId.ID,
        Name: policyId.Name,
        Rules: `service "${NAME}" { policy = "write" }\nnode_prefix "" { policy = "read" }`,
      },
      MASTER,
    );
    expect(updated.status).toBe(200);
    await waitFor(async () => (await api.healthService(NAME, { passing: true })).length === 1, {
      timeoutMs: 8_000,
      message: 'background registration did not succeed once the token was granted',
    });

    await testApps.close(moduleRef);
    expect(await api.healthService(NAME)).toEqual([]);
    const after = proxy.requests('/v1/agent/service/register').length;
    await waitFor(() => proxy.openConnections === 0, {
      timeoutMs: 3_000,
      message: 'connections stayed open after close',
    });
    expect(proxy.requests('/v1/agent/service/register').length).toBe(after);
  });

  it('no token string appears in any log line, error rendering or request line', () => {
    const tokens = [MASTER, UNKNOWN, wrongToken, scopedToken, retryToken];
    for (const token of tokens) expect(token).toMatch(/^[0-9a-z-]{20,}$/);
    expect(logger.entries.length).toBeGreaterThan(5);
    expect(errorTexts.length).toBeGreaterThan(5);
    const haystacks = [...logger.lines(), ...errorTexts, ...proxy.requestLines];
    for (const token of tokens) {
      const leaks = haystacks.filter((text) => text.includes(token));
      expect(leaks).toEqual([]);
    }
  });
});
