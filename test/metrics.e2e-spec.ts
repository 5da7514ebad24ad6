import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  ConsulResponseError,
  DiscoveryHttpClient,
  DiscoveryService,
  ShardingService,
  type DiscoveryModuleOptions,
} from '../lib/index.js';
import {
  FAST_RETRY,
  freePort,
  MetricsCapture,
  startConsulAgent,
  stopAllAgents,
  TestApps,
  waitFor,
  type ConsulAgent,
} from './support/index.js';

// Every instrument of README "Metrics" seen moving through the real OpenTelemetry metrics SDK
// (registered as the global meter provider before each app is created), against a real agent.

const SELF = (id: string) => ({ 'discovery.service.id': id });
const CONSUL = 'discovery.consul.request.duration';

async function startServer(id: string): Promise<{ server: Server; port: number }> {
  const server = createServer((_req, res) => res.end(id));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

describe('metrics (OpenTelemetry)', () => {
  const apps = new TestApps();
  let agent: ConsulAgent;
  let capture: MetricsCapture;

  const options = (extra: Partial<DiscoveryModuleOptions> = {}): DiscoveryModuleOptions => ({
    consul: { host: '127.0.0.1', port: agent.httpPort, timeoutMs: 1_000 },
    retry: { ...FAST_RETRY, failFast: true },
    shutdownTimeoutMs: 2_000,
    ...extra,
  });
  const self = (id: string, port = 4600): Partial<DiscoveryModuleOptions> => ({
    service: { name: 'metrics-self', id, address: '127.0.0.1', port },
    healthCheck: { ttl: '3s' },
  });

  beforeAll(async () => {
    agent = await startConsulAgent();
  });
  beforeEach(() => {
    capture = MetricsCapture.install();
  });
  afterEach(async () => {
    await apps.closeAll();
    await capture.uninstall();
  });
  afterAll(() => stopAllAgents());

  it('registration status follows the state machine; each Consul request is timed by operation and outcome', async () => {
    const app = await apps.start(options(self('metrics-reg')));
    const status = (state: string) =>
      capture.value('discovery.registration.status', {
        ...SELF('metrics-reg'),
        'discovery.registration.state': state,
      });
    expect(await status('registered')).toBe(1);
    expect(await status('idle')).toBe(0);
    const registered = await capture.points(CONSUL, {
      'discovery.consul.operation': 'agent.service.register',
      'discovery.consul.outcome': 'success',
      'discovery.consul.blocking': false,
    });
    expect(registered).toEqual([expect.objectContaining({ count: 1, unit: 's' })]);
    expect(registered[0].value).toBeGreaterThan(0);
    expect(registered[0].value).toBeLessThan(1);

    expect(await app.get(DiscoveryService).deregisterSelf()).toBe(true);
    expect(await status('registered')).toBe(0);
    expect(await status('deregistered')).toBe(1);
    expect(
      await capture.count(CONSUL, {
        'discovery.consul.operation': 'agent.service.deregister',
        'discovery.consul.outcome': 'success',
      }),
    ).toBe(1);

    // Consul answers 500 "No path to datacenter": a server_error.
    const discovery = app.get(DiscoveryService);
    await expect(discovery.discover('metrics-self', { datacenter: 'nowhere' })).rejects.toThrow(
      ConsulResponseError,
    );
    expect(
      await capture.count(CONSUL, {
        'discovery.consul.operation': 'health.service',
        'discovery.consul.outcome': 'server_error',
      }),
    ).toBe(1);
  });

  it('agent stopped: heartbeat failures, unavailable outcomes, a stale watch; back: lost, re-registered, fresh', async () => {
    const own = await startConsulAgent();
    try {
      await own.api().registerService({
        Name: 'metrics-watched',
        ID: 'metrics-watched-1',
        Address: '127.0.0.1',
        Port: 4700,
        Check: { TTL: '60s', Status: 'passing' },
      });
      await apps.start({
        ...options(self('metrics-hb')),
        consul: { host: '127.0.0.1', port: own.httpPort, timeoutMs: 500 },
        healthCheck: { ttl: '1s' },
        watch: { services: ['metrics-watched'] },
      });
      const staleness = () =>
        capture.value('discovery.watch.staleness', { 'discovery.service.name': 'metrics-watched' });
      await waitFor(async () => (await staleness()) === 0, {
        timeoutMs: 5_000,
        message: 'the watch is fresh',
      });
      expect(await capture.points('discovery.heartbeat.failures')).toEqual([]);

      await own.stop();
      const failures = (type: string) =>
        capture.value('discovery.heartbeat.failures', {
          ...SELF('metrics-hb'),
          'error.type': type,
        });
      await waitFor(async () => ((await failures('unavailable')) ?? 0) >= 2, {
        timeoutMs: 5_000,
        message: 'two heartbeats failed while the agent is down',
      });
      expect(
        await capture.count(CONSUL, {
          'discovery.consul.operation': 'agent.check.pass',
          'discovery.consul.outcome': 'unavailable',
        }),
      ).toBeGreaterThanOrEqual(2);
      const stale = async () => {
        const seconds = (await staleness()) ?? 0;
        return seconds > 0 ? seconds : undefined;
      };
      const first = await waitFor(stale, { timeoutMs: 5_000, message: 'the watch turns stale' });
      await waitFor(async () => ((await stale()) ?? 0) > first + 0.2, {
        timeoutMs: 5_000,
        message: 'staleness keeps growing while the agent is down',
      });
      // The watch's long-poll, cut by the stop, is timed too, marked blocking.
      expect(
        await capture.count(CONSUL, {
          'discovery.consul.operation': 'health.service',
          'discovery.consul.blocking': true,
        }),
      ).toBeGreaterThanOrEqual(1);

      await own.start(); // a dev agent comes back empty: the next heartbeat finds it lost
      await waitFor(async () => ((await failures('lost')) ?? 0) >= 1, {
        timeoutMs: 10_000,
        message: 'a heartbeat found the registration lost',
      });
      await waitFor(async () => (await staleness()) === 0, {
        timeoutMs: 10_000,
        message: 'the watch is fresh again',
      });
      expect(
        await capture.value('discovery.registration.status', {
          ...SELF('metrics-hb'),
          'discovery.registration.state': 'registered',
        }),
      ).toBe(1);
    } finally {
      await apps.closeAll();
      await own.stop();
    }
  });

  it.each([
    // At least the settle window (50 ms), then the handoff delay (20 ms) or the lock; less a few
    // ms, as Node's timers may fire a millisecond early against performance.now().
    ['cooperative', 0.065],
    ['exclusive', 0.045],
  ] as const)(
    'sharding (%s): owned partitions per instance, each handoff timed from the membership change',
    async (mode, minSeconds) => {
      const P = 16;
      const sharded = (id: string, port: number) =>
        options({
          service: { name: `metrics-shards-${mode}`, id, address: '127.0.0.1', port },
          healthCheck: { ttl: '3s' },
          sharding: {
            mode,
            partitions: P,
            settleMs: 50,
            handoffDelayMs: 20,
            drainTimeoutMs: 500,
            lock: { lockDelay: '1s' },
          },
        });
      const [idA, idB] = [`${mode}-a`, `${mode}-b`];
      const owned = (id: string) =>
        capture.value('discovery.sharding.partitions.owned', {
          ...SELF(id),
          'discovery.sharding.mode': mode,
        });
      const handoffs = async (id: string) =>
        (await capture.points('discovery.sharding.handoff.duration', SELF(id)))[0];

      const a = await apps.start(sharded(idA, 4601));
      await waitFor(async () => (await owned(idA)) === P, {
        timeoutMs: 10_000,
        message: 'a owns every partition',
      });
      expect((await handoffs(idA))?.count).toBe(P);

      const b = await apps.start(sharded(idB, 4602));
      await waitFor(async () => (await owned(idA)) === P / 2 && (await owned(idB)) === P / 2, {
        timeoutMs: 10_000,
        message: 'a and b own half each',
      });
      expect(a.get(ShardingService).owned()).toHaveLength(P / 2);
      expect((await handoffs(idB))?.count).toBe(P / 2);

      const before = await handoffs(idA);
      await apps.close(b);
      await waitFor(async () => (await owned(idA)) === P, {
        timeoutMs: 10_000,
        message: 'a owns every partition again',
      });
      const after = await handoffs(idA);
      expect(after.count).toBe(P + P / 2);
      const meanSeconds = (after.value - before.value) / (P / 2);
      expect(meanSeconds).toBeGreaterThanOrEqual(minSeconds);
      expect(meanSeconds).toBeLessThan(5);
    },
  );

  it('HTTP client: picks per instance; a dead instance costs one retry and is ejected', async () => {
    const servers = await Promise.all(['echo-1', 'echo-2', 'echo-3'].map(startServer));
    const deadPort = await freePort();
    try {
      const register = (name: string, id: string, port: number) =>
        agent.api().registerService({
          Name: name,
          ID: id,
          Address: '127.0.0.1',
          Port: port,
          Check: { TTL: '60s', Status: 'passing' },
        });
      for (const [i, { port }] of servers.entries())
        await register('m-echo', `m-echo-${i + 1}`, port);
      await register('m-flaky', 'm-flaky-1', servers[0].port);
      await register('m-flaky', 'm-flaky-2', servers[1].port);
      await register('m-flaky', 'm-flaky-dead', deadPort); // passing in Consul, refuses connections

      const app = await apps.start(
        options({ autoRegister: false, http: { outlier: { consecutiveFailures: 1 } } }),
      );
      const http = app.get(DiscoveryHttpClient);
      for (let i = 0; i < 30; i++) expect((await http.fetch('http://m-echo/x')).status).toBe(200);
      const picks = await capture.points('discovery.http.picks', {
        'discovery.service.name': 'm-echo',
      });
      expect(picks.map((p) => [p.attributes['discovery.service.id'], p.value]).sort()).toEqual([
        ['m-echo-1', 10],
        ['m-echo-2', 10],
        ['m-echo-3', 10],
      ]);
      expect(await capture.points('discovery.http.retries')).toEqual([]);

      for (let i = 0; i < 10; i++) expect((await http.fetch('http://m-flaky/x')).status).toBe(200);
      const flaky = { 'discovery.service.name': 'm-flaky' };
      expect(
        await capture.value('discovery.http.picks', {
          ...flaky,
          'discovery.service.id': 'm-flaky-dead',
        }),
      ).toBe(1);
      expect(
        await capture.value('discovery.http.retries', {
          ...flaky,
          'discovery.http.retry.reason': 'not-sent',
        }),
      ).toBe(1);
      expect(await capture.points('discovery.http.ejections')).toEqual([
        expect.objectContaining({
          value: 1,
          unit: '{ejection}',
          attributes: { ...flaky, 'discovery.service.id': 'm-flaky-dead' },
        }),
      ]);
    } finally {
      await Promise.all(servers.map(({ server }) => new Promise((r) => server.close(r))));
    }
  });
});
