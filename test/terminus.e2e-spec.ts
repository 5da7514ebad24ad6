import { randomUUID } from 'node:crypto';
import { Controller, Get, Module, type DynamicModule, type INestApplication } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { HealthCheck, HealthCheckService, TerminusModule } from '@nestjs/terminus';
import {
  DiscoveryModule,
  DiscoveryService,
  DiscoverySettingsError,
  type DiscoveryModuleOptions,
} from '../lib/index.js';
import { DiscoveryHealthIndicator } from '../lib/terminus/index.js';
import {
  CapturingLogger,
  FAST_RETRY,
  freePort,
  startConsulAgent,
  startCountingProxy,
  stopAllAgents,
  waitFor,
  type ConsulAgent,
} from './support/index.js';

// @athomic/discovery/terminus in a real Nest HTTP app (express) against a real agent: what
// GET /health answers while the agent runs, stops and comes back, across deregisterSelf() and
// registerSelf(), and Consul's own HTTP check probing that endpoint.

const TTL = '3s';
const HEARTBEAT_MS = 1_000; // 3 s × the default intervalRatio 1/3
const MAX_STALE_MS = 300;
const PEER = 'health-peer';

@Controller('health')
class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly discovery: DiscoveryHealthIndicator,
  ) {}

  @Get()
  @HealthCheck()
  check() {
    return this.health.check([() => this.discovery.isHealthy()]);
  }

  /** The same, also judging the freshness of `watch.services`. */
  @Get('strict')
  @HealthCheck()
  strict() {
    return this.health.check([
      () => this.discovery.isHealthy('discovery', { maxStaleMs: MAX_STALE_MS }),
    ]);
  }
}

/** The indicator in a module of its own that sees DiscoveryService through a global DiscoveryModule. */
@Module({
  imports: [TerminusModule],
  controllers: [HealthController],
  providers: [DiscoveryHealthIndicator],
})
class HealthModule {}

interface HealthBody {
  status: 'ok' | 'error';
  details: { discovery: Record<string, unknown> & { status: 'up' | 'down'; reasons?: string[] } };
}

interface HttpApp {
  app: INestApplication;
  port: number;
  serviceId: string;
  get(path?: string): Promise<{ status: number; body: HealthBody }>;
}

describe('DiscoveryHealthIndicator (@nestjs/terminus) in an HTTP app', () => {
  let agent: ConsulAgent;
  const open: INestApplication[] = [];

  beforeAll(async () => {
    agent = await startConsulAgent();
  });
  afterEach(async () => {
    await Promise.allSettled(open.splice(0).map((app) => app.close()));
  });
  afterAll(stopAllAgents);

  /** The agent syncs its local state to the catalog a moment after it changed. */
  async function expectPassingInCatalog(name: string, serviceId: string): Promise<void> {
    await waitFor(async () => (await agent.api().passingIds(name)).join() === serviceId, {
      timeoutMs: 3_000,
      message: `${serviceId} alone in ?passing`,
    });
  }

  /**
   * Listens on a free loopback port registered as the service's port; `global` puts the indicator
   * in HealthModule behind a global DiscoveryModule, otherwise in the module importing it.
   */
  async function startHttpApp(
    name: string,
    options: (port: number) => Partial<DiscoveryModuleOptions>,
    { global = false, logger = new CapturingLogger() } = {},
  ): Promise<HttpApp> {
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const serviceId = `${name}-1`;
      const discovery: DynamicModule = DiscoveryModule.forRoot({
        consul: { host: '127.0.0.1', port: agent.httpPort, timeoutMs: 1_000 },
        service: { name, id: serviceId, address: '127.0.0.1', port },
        healthCheck: { ttl: TTL },
        retry: FAST_RETRY,
        shutdownTimeoutMs: 1_000,
        isGlobal: global,
        ...options(port),
      });
      @Module(
        global
          ? { imports: [discovery, HealthModule] }
          : {
              imports: [discovery, TerminusModule],
              controllers: [HealthController],
              providers: [DiscoveryHealthIndicator],
            },
      )
      class AppModule {}
      const app = await NestFactory.create(AppModule, { logger });
      open.push(app);
      try {
        await app.listen(port, '127.0.0.1');
      } catch (error) {
        // freePort is racy: another process may have taken it meanwhile.
        if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt === 3) throw error;
        open.splice(open.indexOf(app), 1);
        await app.close();
        continue;
      }
      const get = async (path = '/health') => {
        const res = await fetch(`http://127.0.0.1:${port}${path}`, {
          signal: AbortSignal.timeout(10_000),
        });
        return { status: res.status, body: (await res.json()) as HealthBody };
      };
      return { app, port, serviceId, get };
    }
  }

  it('200 with the details; 503 while the agent is down (maxStaleMs also names the stale watch); 200 once self-repair re-registered', async () => {
    const name = 'health-ttl';
    const http = await startHttpApp(name, () => ({
      watch: { services: [PEER] },
      sharding: { partitions: 4, settleMs: 50, handoffDelayMs: 0 },
    }));

    // The only member owns every partition once the table settled.
    const up = await waitFor(
      async () => {
        const res = await http.get();
        const sharding = res.body.details.discovery.sharding as { owned: number } | undefined;
        return res.status === 200 && sharding?.owned === 4 ? res : undefined;
      },
      { timeoutMs: 5_000, message: 'GET /health answers 200 with the sharding details' },
    );
    expect(up.body.status).toBe('ok');
    expect(up.body.details.discovery).toEqual({
      status: 'up',
      agent: { ok: true },
      self: {
        serviceId: http.serviceId,
        state: 'registered',
        held: true,
        lastPassAgoMs: expect.any(Number),
        passing: true,
      },
      watches: {
        [PEER]: {
          known: true,
          updatedAt: expect.any(String),
          ageMs: expect.any(Number),
          stale: false,
        },
      },
      sharding: { owned: 4 },
    });
    const { lastPassAgoMs } = up.body.details.discovery.self as { lastPassAgoMs: number };
    expect(lastPassAgoMs).toBeLessThan(3_000);
    await waitFor(async () => (await http.get('/health/strict')).status === 200, {
      timeoutMs: 5_000,
      message: '/health/strict answers 200 once the watch has its first set',
    });

    await agent.stop();
    const down = await http.get();
    expect(down.status).toBe(503);
    expect(down.body.status).toBe('error');
    const details = down.body.details.discovery;
    expect(details).toMatchObject({
      status: 'down',
      agent: { ok: false, error: expect.stringContaining('agent.services') },
      self: { state: 'registered', passing: false },
    });
    expect(details).not.toHaveProperty('self.held');
    expect(details.reasons?.[0]).toMatch(/agent\.services.*unreachable/);

    // The watch's long-poll failed with the agent: reported everywhere, judged only with maxStaleMs.
    const strict = await waitFor(
      async () => {
        const res = await http.get('/health/strict');
        return res.body.details.discovery.reasons?.some((r) => r.includes(`watch of "${PEER}"`))
          ? res
          : undefined;
      },
      { timeoutMs: 5_000, message: `/health/strict names the stale watch of ${PEER}` },
    );
    expect(strict.status).toBe(503);
    const lenient = await http.get();
    expect(lenient.body.details.discovery.watches).toMatchObject({ [PEER]: { stale: true } });
    expect(lenient.body.details.discovery.reasons?.join()).not.toContain('watch of');

    await agent.start(); // a dev agent comes back empty: self-repair registers again
    const back = await waitFor(
      async () => {
        const res = await http.get();
        return res.status === 200 ? res : undefined;
      },
      { timeoutMs: HEARTBEAT_MS + 5_000, message: 'GET /health answers 200 again' },
    );
    expect(back.body.details.discovery.self).toMatchObject({ held: true, passing: true });
    // 200 needs the agent to hold the registration again: it does, and the catalog follows.
    await expectPassingInCatalog(name, http.serviceId);
    await waitFor(async () => (await http.get('/health/strict')).status === 200, {
      timeoutMs: 10_000,
      message: '/health/strict answers 200 once the watch is fresh again',
    });
  }, 60_000);

  it('503 after deregisterSelf(), 200 after registerSelf()', async () => {
    const name = 'health-dereg';
    const http = await startHttpApp(name, () => ({}));
    expect((await http.get()).status).toBe(200);
    const discovery = http.app.get(DiscoveryService);

    expect(await discovery.deregisterSelf()).toBe(true);
    const down = await http.get();
    expect(down.status).toBe(503);
    expect(down.body.details.discovery).toMatchObject({
      agent: { ok: true },
      self: { state: 'deregistered', held: false, passing: false },
      reasons: [`"${http.serviceId}" is deregistered, not registered`],
    });

    // requireRegistered: false only asks whether the agent answers.
    const indicator = http.app.get(DiscoveryHealthIndicator);
    expect(await indicator.isHealthy('consul', { requireRegistered: false })).toMatchObject({
      consul: { status: 'up', self: { state: 'deregistered' } },
    });

    expect(await discovery.registerSelf()).toBe(true);
    const up = await http.get();
    expect(up.status).toBe(200);
    expect(up.body.details.discovery).toMatchObject({
      self: { state: 'registered', passing: true },
    });
    await expectPassingInCatalog(name, http.serviceId);
  });

  it("self in maintenance mode is Consul's critical: 503 naming it, 200 once maintenance ends", async () => {
    const name = 'health-maint';
    const http = await startHttpApp(name, () => ({}));
    expect((await http.get()).status).toBe(200);
    const maintenance = (enable: boolean) =>
      agent
        .api()
        .request(
          'PUT',
          `/v1/agent/service/maintenance/${http.serviceId}?enable=${enable}&reason=upgrade`,
        );
    await maintenance(true);
    // Consul's own view: out of ?passing while the heartbeat keeps passing its TTL check.
    await waitFor(async () => (await agent.api().passingIds(name)).length === 0, {
      timeoutMs: 3_000,
      message: 'maintenance mode takes the instance out of ?passing',
    });
    const down = await http.get();
    expect(down.status).toBe(503);
    expect(down.body.details.discovery).toMatchObject({ self: { passing: false } });
    expect(down.body.details.discovery.reasons?.join()).toContain('critical');

    await maintenance(false);
    await waitFor(async () => (await http.get()).status === 200, {
      timeoutMs: 3_000,
      message: 'up again once maintenance ends',
    });
  });

  it('enabled: false → up with { enabled: false }, without asking the agent', async () => {
    const proxy = await startCountingProxy(agent.httpPort);
    try {
      const http = await startHttpApp('health-off', () => ({
        enabled: false,
        consul: { host: '127.0.0.1', port: proxy.port, timeoutMs: 1_000 },
      }));
      const res = await http.get();
      expect(res.status).toBe(200);
      expect(res.body.details.discovery).toEqual({ status: 'up', enabled: false });
      expect(proxy.requestLines).toEqual([]);
    } finally {
      await proxy.close();
    }
  });

  it('bad arguments: a DiscoverySettingsError naming each field, no request sent', async () => {
    const proxy = await startCountingProxy(agent.httpPort);
    try {
      const http = await startHttpApp('health-args', () => ({
        consul: { host: '127.0.0.1', port: proxy.port, timeoutMs: 1_000 },
      }));
      const indicator = http.app.get(DiscoveryHealthIndicator);
      const reads = (): number => proxy.matching('/v1/agent/services').length;
      const before = reads();
      const error = await indicator.isHealthy('', { maxStaleMs: -1 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(DiscoverySettingsError);
      expect((error as DiscoverySettingsError).paths).toEqual(['key', 'maxStaleMs']);
      expect(reads()).toBe(before);
      // The one read a valid call makes goes through this proxy.
      await indicator.isHealthy();
      expect(reads()).toBe(before + 1);
    } finally {
      await Promise.allSettled(open.splice(0).map((app) => app.close()));
      await proxy.close();
    }
  });

  it('a slow agent: 503 once consul.timeoutMs passed, naming the timeout', async () => {
    const proxy = await startCountingProxy(agent.httpPort);
    try {
      const http = await startHttpApp('health-slow', () => ({
        consul: { host: '127.0.0.1', port: proxy.port, timeoutMs: 1_000 },
      }));
      expect((await http.get()).status).toBe(200);

      proxy.delayMs = 5_000;
      const started = performance.now();
      const slow = await http.get();
      const elapsed = performance.now() - started;
      expect(slow.status).toBe(503);
      expect(slow.body.details.discovery.agent).toEqual({
        ok: false,
        error: 'Consul agent.services timed out after 1000 ms',
      });
      expect(elapsed).toBeGreaterThanOrEqual(950);
      expect(elapsed).toBeLessThan(4_000); // well before the agent's answer would come

      proxy.delayMs = 0;
      await waitFor(async () => (await http.get()).status === 200, {
        timeoutMs: 10_000,
        message: 'GET /health answers 200 once the agent is fast again',
      });
    } finally {
      await Promise.allSettled(open.splice(0).map((app) => app.close()));
      await proxy.close();
    }
  });

  it("Consul's HTTP check on GET /health turns passing (indicator in its own module, global DiscoveryModule)", async () => {
    const name = 'health-http-check';
    const http = await startHttpApp(
      name,
      (port) => ({
        healthCheck: { http: `http://127.0.0.1:${port}/health`, interval: '1s', timeout: '1s' },
      }),
      { global: true },
    );
    const checkId = `service:${http.serviceId}`;
    const check = await waitFor(
      async () => {
        const found = (await agent.api().agentChecks())[checkId];
        return found?.Status === 'passing' ? found : undefined;
      },
      { timeoutMs: 10_000, message: `${checkId} passing` },
    );
    // Consul ran it against the endpoint: its output is our answer. (A new HTTP check starts
    // critical; the indicator does not ask for it, or it could never turn passing.)
    expect(check.Output).toContain(`http://127.0.0.1:${http.port}/health: 200 OK`);
    const answer = JSON.parse(check.Output.slice(check.Output.indexOf('{'))) as HealthBody;
    expect(answer.details.discovery).toMatchObject({
      status: 'up',
      self: { serviceId: http.serviceId, state: 'registered', held: true, passing: true },
    });
    await expectPassingInCatalog(name, http.serviceId);
  });

  it('a refused token (ACL 403): 503 naming the refusal, never the token', async () => {
    const master = randomUUID();
    const aclAgent = await startConsulAgent({ acl: { masterToken: master } });
    const token = randomUUID(); // unknown to the agent
    const logger = new CapturingLogger();
    const http = await startHttpApp(
      'health-acl',
      () => ({
        consul: { host: '127.0.0.1', port: aclAgent.httpPort, timeoutMs: 1_000, token },
      }),
      { logger },
    );
    const res = await fetch(`http://127.0.0.1:${http.port}/health`, {
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    expect(res.status).toBe(503);
    const body = JSON.parse(text) as HealthBody;
    expect(body.details.discovery).toMatchObject({
      agent: { ok: false, error: expect.stringMatching(/HTTP 403: ACL not found/) },
      self: { passing: false },
    });
    expect(body.details.discovery.self).not.toMatchObject({ state: 'registered' });
    expect(text).not.toContain(token);
    expect(logger.all()).not.toContain(token);
  });
});
