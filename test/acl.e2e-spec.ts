import { randomUUID } from 'node:crypto';
import {
  ConsulResponseError,
  DISCOVERY_PROVIDER,
  DiscoveryService,
  type DiscoveryModuleOptions,
  type ServiceDiscoveryProtocol,
} from '../lib/index.js';
import {
  CapturingLogger,
  FAST_RETRY,
  TestApps,
  errorText,
  startConsulAgent,
  startCountingProxy,
  stopAllAgents,
  waitFor,
  type ConsulAgent,
} from './support/index.js';

// ACL agent (default deny, master token): 403s at boot name the missing permission or the
// unknown token, the token never shows up in logs or errors, and a token scoped to the service
// is enough to register, heartbeat, discover and deregister.
const MASTER = randomUUID();

describe('ACL agent (default deny)', () => {
  const apps = new TestApps();
  let agent: ConsulAgent;
  const savedToken = process.env.CONSUL_HTTP_TOKEN;

  const options = (
    name: string,
    port: number,
    token: string | undefined,
    failFast = true,
  ): DiscoveryModuleOptions => ({
    consul: { host: '127.0.0.1', port, timeoutMs: 1_000, token },
    service: { name, id: `${name}-1`, address: '127.0.0.1', port: 4400 },
    healthCheck: { ttl: '3s' },
    retry: { ...FAST_RETRY, failFast },
    shutdownTimeoutMs: 1_000,
  });

  /** Boots with failFast and returns the rejection (fails when init resolves). */
  async function bootError(opts: DiscoveryModuleOptions, logger: CapturingLogger) {
    const app = await apps.create(opts, logger);
    return app.init().then(
      () => {
        throw new Error('init resolved; expected a 403');
      },
      (error: unknown) => error,
    );
  }

  beforeAll(async () => {
    delete process.env.CONSUL_HTTP_TOKEN;
    agent = await startConsulAgent({ acl: { masterToken: MASTER } });
  });
  afterEach(() => apps.closeAll());
  afterAll(async () => {
    await stopAllAgents();
    if (savedToken !== undefined) process.env.CONSUL_HTTP_TOKEN = savedToken;
  });

  it('without a token: 403 naming the missing service:write', async () => {
    const logger = new CapturingLogger();
    const error = await bootError(options('acl-none', agent.httpPort, undefined), logger);
    expect(error).toBeInstanceOf(ConsulResponseError);
    expect((error as ConsulResponseError).status).toBe(403);
    expect((error as Error).message).toMatch(/Permission denied/);
    expect((error as Error).message).toContain('service:write');
    expect((error as ConsulResponseError).consulMessage).toContain('service:write');
    expect(errorText(error) + logger.all()).not.toContain(MASTER);
    expect(await agent.api().passingIds('acl-none')).toEqual([]);
  });

  it('with an unknown token: 403 "ACL not found", and the token is never shown', async () => {
    const wrong = randomUUID();
    const logger = new CapturingLogger();
    const error = await bootError(options('acl-wrong', agent.httpPort, wrong), logger);
    expect(error).toBeInstanceOf(ConsulResponseError);
    expect((error as ConsulResponseError).status).toBe(403);
    expect((error as Error).message).toContain('ACL not found');
    const everything = errorText(error) + logger.all();
    expect(everything).not.toContain(wrong);
    expect(everything).not.toContain(wrong.slice(0, 8));
  });

  it('register() refused by ACL resolves false, once, with the cause logged and no token', async () => {
    const token = await agent.api().createAclToken(MASTER, `node_prefix "" { policy = "read" }`);
    const tap = await startCountingProxy(agent.httpPort);
    try {
      const logger = new CapturingLogger();
      const app = await apps.start(
        { ...options('acl-reg', tap.port, token), autoRegister: false },
        logger,
      );
      const provider = app.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
      const ok = await provider.register({
        name: 'acl-other',
        serviceId: 'acl-other-1',
        address: '127.0.0.1',
        port: 4401,
      });
      expect(ok).toBe(false);
      // 4xx is not retried.
      expect(tap.matching('PUT /v1/agent/service/register ')).toHaveLength(1);
      const warnings = logger.lines('warn').filter((l) => l.includes('acl-other-1'));
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/403/);
      expect(warnings[0]).toContain('service:write');
      expect(logger.all()).not.toContain(token);
    } finally {
      await apps.closeAll();
      await tap.close();
    }
  });

  it('a token scoped to the service registers, heartbeats, discovers and deregisters', async () => {
    const name = 'acl-scoped';
    const token = await agent
      .api()
      .createAclToken(
        MASTER,
        [
          `service "${name}" { policy = "write" }`,
          `service_prefix "" { policy = "read" }`,
          `node_prefix "" { policy = "read" }`,
        ].join('\n'),
      );
    const tap = await startCountingProxy(agent.httpPort);
    try {
      const logger = new CapturingLogger();
      const app = await apps.start(options(name, tap.port, token), logger);
      expect(await agent.api().passingIds(name)).toEqual([`${name}-1`]);

      const provider = app.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
      const found = await provider.discover(name);
      expect(found.map((i) => i.serviceId)).toEqual([`${name}-1`]);
      expect(found[0]).toMatchObject({ name, address: '127.0.0.1', port: 4400 });

      // Heartbeats succeed: passes keep coming for longer than one TTL and the check never
      // turns critical.
      const passes = () => tap.matching(`PUT /v1/agent/check/pass/service:${name}-1 `);
      await waitFor(() => passes().length >= 4, {
        timeoutMs: 8_000,
        message: 'four heartbeats',
      });
      expect(await agent.api().passingIds(name)).toEqual([`${name}-1`]);
      expect(logger.lines('warn')).toEqual([]);

      await apps.close(app);
      expect(await agent.api().passingIds(name)).toEqual([]);
      expect(await agent.api().agentServices()).not.toHaveProperty(`${name}-1`);

      // Every request carried the token in X-Consul-Token, and never anywhere else.
      expect(tap.log.length).toBeGreaterThanOrEqual(6);
      for (const request of tap.log) {
        expect(request.headers['x-consul-token']).toBe(token);
        expect(request.decoded).not.toContain(token);
        expect(request.head.split(token)).toHaveLength(2);
      }
      expect(tap.matching(`/v1/agent/service/deregister/${name}-1`)).toHaveLength(1);
      expect(logger.all()).not.toContain(token);
    } finally {
      await apps.closeAll();
      await tap.close();
    }
  });

  it('a token revoked while running: heartbeat 403s are logged once, without the token', async () => {
    const name = 'acl-revoked';
    const token = await agent
      .api()
      .createAclToken(
        MASTER,
        `service "${name}" { policy = "write" }\nnode_prefix "" { policy = "read" }`,
      );
    const self = await agent.api().request('GET', '/v1/acl/token/self', undefined, token);
    const accessor = (self.json as { AccessorID: string }).AccessorID;
    const logger = new CapturingLogger();
    const app = await apps.start(options(name, agent.httpPort, token), logger);
    expect(await agent.api().passingIds(name)).toEqual([`${name}-1`]);

    const revoked = await agent
      .api()
      .request('DELETE', `/v1/acl/token/${accessor}`, undefined, MASTER);
    expect(revoked.status).toBe(200);
    // The TTL (3 s) runs out without passes: the agent's check turns critical. (The catalog
    // keeps the old status: the agent syncs with the registering token, which is gone.)
    await waitFor(
      async () => (await agent.api().agentChecks())[`service:${name}-1`]?.Status === 'critical',
      { timeoutMs: 8_000, message: 'critical once the token is gone' },
    );
    const failures = logger
      .lines('warn')
      .filter((l) => /Heartbeat of "acl-revoked-1" failed/.test(l));
    expect(failures).toHaveLength(1);
    expect(failures[0]).toContain('ACL not found');

    const started = performance.now();
    await apps.close(app); // deregister is refused too; close still ends in time
    expect(performance.now() - started).toBeLessThan(1_000 + 500);
    expect(logger.all()).not.toContain(token);
  });

  it('DiscoveryService.self and logs never carry the token', async () => {
    const name = 'acl-self';
    const token = await agent
      .api()
      .createAclToken(
        MASTER,
        `service "${name}" { policy = "write" }\nnode_prefix "" { policy = "read" }`,
      );
    const logger = new CapturingLogger();
    const app = await apps.start(options(name, agent.httpPort, token), logger);
    const discovery = app.get(DiscoveryService);
    expect(JSON.stringify(discovery.self)).not.toContain(token);
    await apps.close(app);
    expect(logger.all()).toMatch(/Registered "acl-self-1"/);
    expect(logger.all()).toMatch(/Deregistered "acl-self-1"/);
    expect(logger.all()).not.toContain(token);
  });
});
