import {
  DISCOVERY_PROVIDER,
  DiscoveryService,
  type DiscoveryModuleOptions,
  type ServiceDiscoveryProtocol,
} from '../lib/index.js';
import {
  CapturingLogger,
  FAST_RETRY,
  TestApps,
  startConsulAgent,
  startCountingProxy,
  stopAllAgents,
  waitFor,
  type ConsulAgent,
  type CountingProxy,
} from './support/index.js';

// deregisterSelf() / registerSelf() on a running app: once deregisterSelf() resolved true, the
// module does not bring the instance back (no heartbeat, no self-repair) until registerSelf().
const TTL_MS = 1_500;
const HEARTBEAT_MS = TTL_MS / 3; // the default intervalRatio
const QUIET_BEATS = 4;

describe('deregisterSelf() and registerSelf()', () => {
  const apps = new TestApps();
  let agent: ConsulAgent;
  let proxy: CountingProxy;

  const options = (name: string): DiscoveryModuleOptions => ({
    consul: { host: '127.0.0.1', port: proxy.port, timeoutMs: 2_000 },
    service: { name, id: `${name}-1`, address: '127.0.0.1', port: 4400 },
    healthCheck: { ttl: `${TTL_MS}ms` },
    retry: { ...FAST_RETRY, failFast: true },
    shutdownTimeoutMs: 2_000,
  });

  const registered = async (id: string): Promise<boolean> =>
    Object.hasOwn(await agent.api().agentServices(), id);
  // The client sends the check id URL-encoded (service%3A<id>).
  const passes = (id: string): number =>
    proxy.requests(`/v1/agent/check/pass/service%3A${id} `).length;
  const registrations = (): number => proxy.requests('/v1/agent/service/register').length;

  /**
   * Several heartbeats go by with the instance absent and no write for it: counted on a control
   * instance with the same TTL, started through the same proxy, until it has beaten that often.
   */
  async function expectStaysGone(name: string): Promise<void> {
    const id = `${name}-1`;
    const control = `${name}-control`;
    const writesBefore = registrations();
    const passesBefore = passes(id);
    await apps.start(options(control));
    let seenBack = false;
    await waitFor(
      async () => {
        seenBack ||= await registered(id);
        return passes(`${control}-1`) >= QUIET_BEATS;
      },
      { timeoutMs: QUIET_BEATS * HEARTBEAT_MS + 5_000, message: `${QUIET_BEATS} control beats` },
    );
    expect(seenBack).toBe(false);
    expect(registrations()).toBe(writesBefore + 1); // the control's own
    expect(passes(id)).toBe(passesBefore);
  }

  beforeAll(async () => {
    agent = await startConsulAgent();
    proxy = await startCountingProxy(agent.httpPort);
  });
  afterEach(async () => {
    proxy.delayMs = 0;
    await apps.closeAll();
  });
  afterAll(async () => {
    await proxy.close();
    await stopAllAgents();
  });

  it('stays gone for several heartbeats, then registerSelf() brings it back heartbeating', async () => {
    const name = 'dereg-self';
    const app = await apps.start(options(name));
    const discovery = app.get(DiscoveryService);
    expect(await registered(`${name}-1`)).toBe(true);

    await expect(discovery.deregisterSelf()).resolves.toBe(true);
    expect(await registered(`${name}-1`)).toBe(false);
    await expectStaysGone(name);

    await expect(discovery.registerSelf()).resolves.toBe(true);
    const entries = await agent.api().healthService(name, { passing: true });
    expect(entries.map((e) => e.Service.ID)).toEqual([`${name}-1`]);
    const beatsBefore = passes(`${name}-1`);
    await waitFor(() => passes(`${name}-1`) >= beatsBefore + 2, {
      timeoutMs: 3 * HEARTBEAT_MS + 2_000,
      message: 'two heartbeats after registerSelf()',
    });
    expect(await registered(`${name}-1`)).toBe(true);
  });

  it('is not re-registered by a heartbeat that was in flight when deregisterSelf() was called', async () => {
    const name = 'dereg-race';
    const id = `${name}-1`;
    const logger = new CapturingLogger();
    const app = await apps.start(options(name), logger);
    const discovery = app.get(DiscoveryService);

    // The agent answers slowly: the next pass is still in flight when deregisterSelf() starts.
    proxy.delayMs = HEARTBEAT_MS;
    const before = passes(id);
    await waitFor(() => passes(id) > before, {
      timeoutMs: 2 * HEARTBEAT_MS + 2_000,
      message: 'a heartbeat pass sent',
    });
    await expect(discovery.deregisterSelf()).resolves.toBe(true);
    proxy.delayMs = 0;
    expect(await registered(id)).toBe(false);

    await expectStaysGone(name);
    expect(logger.all()).not.toMatch(/registering it again/);
  });
});

describe('deregistering what the agent no longer holds, with ACLs', () => {
  const MASTER = 'registration-master-token';
  const apps = new TestApps();
  let agent: ConsulAgent;

  beforeAll(async () => {
    agent = await startConsulAgent({ acl: { masterToken: MASTER } });
  });
  afterEach(() => apps.closeAll());
  afterAll(stopAllAgents);

  // 1.8.7 with ACLs answers 500 `Unknown service` (not 200 or 404) for an unknown service.
  it('deregisterSelf() and deregister() resolve true for a service already gone', async () => {
    const name = 'acl-gone';
    const logger = new CapturingLogger();
    const app = await apps.start(
      {
        consul: { host: '127.0.0.1', port: agent.httpPort, token: MASTER, timeoutMs: 2_000 },
        service: { name, id: `${name}-1`, address: '127.0.0.1', port: 4401 },
        healthCheck: { ttl: '30s' }, // no heartbeat comes between the two deregistrations
        retry: { ...FAST_RETRY, failFast: true },
      },
      logger,
    );
    const raw = await agent.api().request('PUT', '/v1/agent/service/deregister/never-there');
    expect(raw.status).toBe(500);
    expect(raw.text).toMatch(/Unknown service/);

    await agent.api().deregisterService(`${name}-1`);
    await expect(app.get(DiscoveryService).deregisterSelf()).resolves.toBe(true);
    await expect(
      app.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER).deregister('never-there'),
    ).resolves.toBe(true);
    expect(logger.all()).not.toMatch(/Could not deregister/);
  });
});
