import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestingModule } from '@nestjs/testing';
import { DiscoveryService, type DiscoveryModuleOptions } from '../lib/index.js';
import {
  CapturingLogger,
  FAST_RETRY,
  TestApps,
  startConsulAgent,
  stopAllAgents,
  waitFor,
  type ConsulAgent,
  type HealthServiceEntry,
} from './support/index.js';

// Heartbeat + self-repair (README "Behaviour"): the registration comes back by itself after the dev
// agent restarts empty, and after a deregistration behind the app's back, at the next beat.
const TTL = '3s';
const HEARTBEAT_MS = 1_000; // 3 s × the default intervalRatio 1/3
const REPAIR_BOUND_MS = HEARTBEAT_MS + 1_000;

describe('self-repair', () => {
  const apps = new TestApps();
  let agent: ConsulAgent;

  const options = (name: string): DiscoveryModuleOptions => ({
    consul: { host: '127.0.0.1', port: agent.httpPort, timeoutMs: 1_000 },
    service: {
      name,
      id: `${name}-1`,
      address: '127.0.0.1',
      port: 4300,
      tags: ['blue'],
      meta: { version: '7' },
    },
    healthCheck: { ttl: TTL },
    retry: { ...FAST_RETRY, failFast: true },
    shutdownTimeoutMs: 1_000,
  });

  /** ms from now until `name-1` is in ?passing (bounded well above the contract's bound). */
  async function timeUntilPassing(name: string): Promise<number> {
    const started = performance.now();
    await waitFor(async () => (await agent.api().passingIds(name)).includes(`${name}-1`), {
      timeoutMs: REPAIR_BOUND_MS + 5_000,
      intervalMs: 20,
      message: `${name}-1 back in ?passing`,
    });
    return performance.now() - started;
  }

  function expectSameRegistration(entries: HealthServiceEntry[], name: string): void {
    expect(entries).toHaveLength(1);
    const [entry] = entries;
    expect(entry.Service).toMatchObject({
      ID: `${name}-1`,
      Service: name,
      Address: '127.0.0.1',
      Port: 4300,
      Tags: ['blue'],
      Meta: { version: '7' },
    });
    expect(entry.Checks.find((c) => c.CheckID === `service:${name}-1`)?.Status).toBe('passing');
  }

  beforeAll(async () => {
    agent = await startConsulAgent();
  });
  afterEach(() => apps.closeAll());
  afterAll(stopAllAgents);

  it(`is back in ?passing within ${REPAIR_BOUND_MS} ms of the restarted agent answering`, async () => {
    const name = 'repair-restart';
    const logger = new CapturingLogger();
    const app: TestingModule = await apps.start(options(name), logger);
    expectSameRegistration(await agent.api().healthService(name, { passing: true }), name);

    for (let round = 1; round <= 2; round++) {
      const pid = agent.pid;
      await agent.restart(); // resolves once the new agent has a leader and answers
      expect(agent.pid).not.toBe(pid);
      const ms = await timeUntilPassing(name);
      expect(ms).toBeLessThan(REPAIR_BOUND_MS);
      expectSameRegistration(await agent.api().healthService(name, { passing: true }), name);
    }
    // The same app, never restarted, and it knows what happened.
    expect(app.get(DiscoveryService).self.serviceId).toBe(`${name}-1`);
    expect(logger.lines('warn').join('\n')).toMatch(/Consul lost "repair-restart-1"/);
    expect(logger.lines('error')).toEqual([]);
  });

  it(`repairs a deregistration done behind its back at the next heartbeat`, async () => {
    const name = 'repair-dereg';
    await apps.start(options(name));
    expectSameRegistration(await agent.api().healthService(name, { passing: true }), name);

    for (let round = 1; round <= 2; round++) {
      await agent.api().deregisterService(`${name}-1`);
      expect(await agent.api().agentServices()).not.toHaveProperty(`${name}-1`);
      const ms = await timeUntilPassing(name);
      expect(ms).toBeLessThan(REPAIR_BOUND_MS);
      expectSameRegistration(await agent.api().healthService(name, { passing: true }), name);
    }
  });

  it('keeps the check passing across several TTLs (the heartbeat really runs)', async () => {
    const name = 'repair-steady';
    await apps.start(options(name));
    const since = Date.now();
    const misses: number[] = [];
    // Poll for more than two TTLs: the check must never leave passing.
    await waitFor(
      async () => {
        if ((await agent.api().healthService(name, { passing: true })).length !== 1)
          misses.push(Date.now() - since);
        return Date.now() - since > 7_000;
      },
      { timeoutMs: 12_000, intervalMs: 250, message: 'polled for 7 s' },
    );
    expect(misses).toEqual([]);
    expectSameRegistration(await agent.api().healthService(name, { passing: true }), name);
  });

  it('an HTTP-checked instance (no TTL to pass) is also back after an agent restart', async () => {
    const name = 'repair-http';
    const health: Server = createServer((_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => health.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(health.address() as AddressInfo).port}/health`;
      // interval 3 s × intervalRatio 1/3: the registration is confirmed every second.
      await apps.start({ ...options(name), healthCheck: { http: url, interval: '3s' } });
      const registered = async (): Promise<boolean> =>
        Object.hasOwn(await agent.api().agentServices(), `${name}-1`);
      expect(await registered()).toBe(true);

      await agent.restart();
      const started = performance.now();
      await waitFor(registered, {
        timeoutMs: REPAIR_BOUND_MS + 5_000,
        intervalMs: 20,
        message: `${name}-1 registered again after the restart`,
      });
      expect(performance.now() - started).toBeLessThan(REPAIR_BOUND_MS);
      const [check] = Object.values(await agent.api().agentChecks()).filter(
        (c) => c.ServiceID === `${name}-1`,
      );
      expect(check?.CheckID).toBe(`service:${name}-1`);
    } finally {
      await apps.closeAll();
      await new Promise<void>((resolve) => health.close(() => resolve()));
    }
  });
});
