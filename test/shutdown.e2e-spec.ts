import { DiscoveryService, type DiscoveryModuleOptions } from '../lib/index.js';
import {
  CapturingLogger,
  FAST_RETRY,
  TestApps,
  killChildApps,
  startChildApp,
  startConsulAgent,
  startCountingProxy,
  stopAllAgents,
  waitFor,
  type ChildApp,
  type ConsulAgent,
  type CountingProxy,
} from './support/index.js';

// Clean exit (README "Behaviour" → "Clean exit"): a process that closes its app ends on its own
// within 2 s (no open handles, also with a live watch); a SIGTERM'd process is gone from Consul
// before it exits and never comes back; shutdownTimeoutMs bounds close() against a slow or
// unreachable agent. Child processes run test/support/fixtures/child-app.mjs on the BUILT
// library (dist/): `npm run build` first (`npm test` does it in pretest).
const EXIT_AFTER_CLOSE_MS = 2_000;
const HEARTBEAT_MS = 1_000; // ttl 3s × 1/3
const SHUTDOWN_TIMEOUT_MS = 1_000;
const CLOSE_MARGIN_MS = 500;

describe('shutdown', () => {
  const apps = new TestApps();
  let agent: ConsulAgent;
  const taps: CountingProxy[] = [];

  const options = (name: string, port: number): DiscoveryModuleOptions => ({
    consul: { host: '127.0.0.1', port, timeoutMs: 1_000 },
    service: { name, id: `${name}-1`, address: '127.0.0.1', port: 4500 },
    healthCheck: { ttl: '3s' },
    retry: { ...FAST_RETRY, failFast: true },
    shutdownTimeoutMs: SHUTDOWN_TIMEOUT_MS,
    watch: { waitTime: '30s' },
  });

  /** A pass-through in front of the agent that sees every request and can hold answers. */
  const tap = async (): Promise<CountingProxy> => {
    const t = await startCountingProxy(agent.httpPort);
    taps.push(t);
    return t;
  };

  const registeredIds = async (): Promise<string[]> =>
    Object.keys(await agent.api().agentServices());

  let controls = 0;
  /**
   * Resolves once a control app with the same heartbeat interval, started now, has passed its
   * TTL twice: by then a heartbeat timer the closed app had left behind would have fired at
   * least once. A counted signal instead of a fixed sleep.
   */
  async function heartbeatsElapsed(): Promise<void> {
    const c = await tap();
    const name = `sd-control-${++controls}`;
    await apps.start(options(name, c.port));
    await waitFor(() => c.matching(`/v1/agent/check/pass/service:${name}-1 `).length >= 2, {
      timeoutMs: 4 * HEARTBEAT_MS + 2_000,
      message: 'two heartbeats of the control app',
    });
  }

  /** No registration reached the agent through `p` besides the boot one. */
  const expectRegisteredOnce = (p: CountingProxy): void =>
    expect(p.matching(`/v1/agent/service/register`).map((r) => r.decoded)).toEqual([
      'PUT /v1/agent/service/register HTTP/1.1',
    ]);

  /** close()/exit timing of a child that was told to close (SIGUSR2). */
  async function closeChild(child: ChildApp) {
    child.kill('SIGUSR2');
    const closed = await child.next('closed', 10_000);
    const exit = await child.exited;
    return { closed, exit, exitAfterCloseMs: exit.at - closed.t };
  }

  beforeAll(async () => {
    agent = await startConsulAgent();
  });
  afterEach(async () => {
    await killChildApps();
    await apps.closeAll();
    await Promise.all(taps.splice(0).map((t) => t.close()));
  });
  afterAll(stopAllAgents);

  describe('a child process that closes its own app', () => {
    it(`exits on its own within ${EXIT_AFTER_CLOSE_MS} ms, deregistered`, async () => {
      const name = 'sd-close';
      const child = startChildApp({ mode: 'close', options: options(name, agent.httpPort) });
      await child.next('armed');
      expect(await agent.api().passingIds(name)).toEqual([`${name}-1`]);

      const { exit, exitAfterCloseMs } = await closeChild(child);
      expect(exit).toMatchObject({ code: 0, signal: null });
      expect(exitAfterCloseMs).toBeLessThan(EXIT_AFTER_CLOSE_MS);
      expect(await registeredIds()).not.toContain(`${name}-1`);
      expect(child.output()).toContain(`Deregistered "${name}-1"`);
      expect(child.output()).not.toMatch(/\[error\]/);
    });

    it(`exits on its own within ${EXIT_AFTER_CLOSE_MS} ms with a watch long-poll open`, async () => {
      const name = 'sd-watch';
      const p = await tap();
      const child = startChildApp({ mode: 'close-watch', options: options(name, p.port) });
      const watching = await child.next('watching');
      expect(watching.instances).toEqual([`${name}-1`]);
      // The blocking query (index=…, wait=30000ms) is in flight: it alone would hold the
      // process for 30 s.
      await waitFor(
        () => p.matching(new RegExp(`/v1/health/service/${name}\\?.*index=`)).length > 0,
        {
          timeoutMs: 5_000,
          message: 'blocking query sent',
        },
      );
      await child.next('armed');

      const { closed, exit, exitAfterCloseMs } = await closeChild(child);
      expect(closed.subscriptionClosed).toBe(true);
      expect(exit).toMatchObject({ code: 0, signal: null });
      expect(exitAfterCloseMs).toBeLessThan(EXIT_AFTER_CLOSE_MS);
      expect(await registeredIds()).not.toContain(`${name}-1`);
    });

    it('with a slow agent: close() is bounded by shutdownTimeoutMs, then the process exits', async () => {
      const name = 'sd-slow-child';
      const p = await tap();
      const child = startChildApp({ mode: 'close', options: options(name, p.port) });
      await child.next('armed');
      p.delayMs = 30_000;

      const { closed, exit, exitAfterCloseMs } = await closeChild(child);
      expect(closed.closeMs).toBeLessThan(SHUTDOWN_TIMEOUT_MS + CLOSE_MARGIN_MS);
      expect(exit).toMatchObject({ code: 0, signal: null });
      expect(exitAfterCloseMs).toBeLessThan(EXIT_AFTER_CLOSE_MS);
    });
  });

  describe('SIGTERM with app.enableShutdownHooks()', () => {
    it('is gone from the agent before the process exits, and stays gone', async () => {
      const name = 'sd-term';
      const p = await tap();
      const child = startChildApp({ mode: 'signal', options: options(name, p.port) });
      await child.next('armed');
      expect(await agent.api().passingIds(name)).toEqual([`${name}-1`]);

      child.kill('SIGTERM');
      const exit = await child.exited;
      // Checked as soon as 'exit' fired: the deregistration happened before.
      expect(await registeredIds()).not.toContain(`${name}-1`);
      // Nest closes the app, then re-raises the signal (enableShutdownHooks without
      // useProcessExit): the process ends by SIGTERM; an error in a hook would exit with code 1.
      expect(exit).toMatchObject({ code: null, signal: 'SIGTERM' });
      expect(child.receivedAt('hooks-done')).toBeDefined();
      expect(child.output()).toContain(`Deregistered "${name}-1"`);
      // Every request of the dead process went through p: nothing can re-register it now.
      expectRegisteredOnce(p);
      expect(p.matching(`/v1/agent/service/deregister/${name}-1 `)).toHaveLength(1);
      expect(await registeredIds()).not.toContain(`${name}-1`);
    });

    it('also when the signal lands while a heartbeat is in flight', async () => {
      const name = 'sd-term-beat';
      const p = await tap();
      const child = startChildApp({ mode: 'signal', options: options(name, p.port) });
      await child.next('armed');
      const passes = () => p.matching(`/v1/agent/check/pass/service:${name}-1 `).length;
      const before = passes();
      p.delayMs = 300; // every answer, the heartbeat's included, is held 300 ms
      await waitFor(() => passes() > before, {
        timeoutMs: 3 * HEARTBEAT_MS,
        intervalMs: 2,
        message: 'next heartbeat sent',
      });
      child.kill('SIGTERM'); // the pass is still waiting for its answer

      const exit = await child.exited;
      expect(exit).toMatchObject({ code: null, signal: 'SIGTERM' });
      expect(await registeredIds()).not.toContain(`${name}-1`);
      expect(p.matching(`/v1/agent/service/deregister/${name}-1 `)).toHaveLength(1);
      // Every request of the dead process went through p: nothing can re-register it now.
      expectRegisteredOnce(p);
      expect(await registeredIds()).not.toContain(`${name}-1`);
    });
  });

  describe('in process', () => {
    it('close() sends nothing more afterwards: no heartbeat, no re-registration', async () => {
      const name = 'sd-quiet';
      const p = await tap();
      const app = await apps.start(options(name, p.port));
      await apps.close(app);
      expect(await registeredIds()).not.toContain(`${name}-1`);
      const sent = p.log.length;
      await heartbeatsElapsed();
      expect(p.log.slice(sent).map((r) => r.decoded)).toEqual([]);
      expect(p.openConnections).toBe(0);
      expect(await registeredIds()).not.toContain(`${name}-1`);
    });

    it('a heartbeat answered "unknown check" during shutdown does not re-register', async () => {
      const name = 'sd-race';
      const p = await tap();
      const logger = new CapturingLogger();
      const app = await apps.start(options(name, p.port), logger);
      // Behind the app's back: its next pass will be answered 500 "does not have associated TTL".
      await agent.api().deregisterService(`${name}-1`);
      const passes = () => p.matching(`/v1/agent/check/pass/service:${name}-1 `).length;
      const before = passes();
      p.delayMs = 300;
      await waitFor(() => passes() > before, {
        timeoutMs: 3 * HEARTBEAT_MS,
        intervalMs: 2,
        message: 'next heartbeat sent',
      });
      await apps.close(app); // while that pass waits for its answer
      expect(await registeredIds()).not.toContain(`${name}-1`);
      p.delayMs = 0;
      await heartbeatsElapsed();
      expectRegisteredOnce(p);
      expect(await registeredIds()).not.toContain(`${name}-1`);
      expect(logger.lines('error')).toEqual([]);
    });

    it('a registration that landed but whose answer is held past the deadline is not left in Consul by close()', async () => {
      const name = 'sd-zombie';
      const p = await tap();
      const base = options(name, p.port);
      const app = await apps.start({
        ...base,
        autoRegister: false,
        consul: { ...base.consul, timeoutMs: 10_000 },
      });
      p.delayMs = 5 * SHUTDOWN_TIMEOUT_MS; // every answer comes back well after the deadline
      const registering = app.get(DiscoveryService).registerSelf();
      await waitFor(async () => (await registeredIds()).includes(`${name}-1`), {
        timeoutMs: 5_000,
        message: 'the registration landed on the agent',
      });
      const closing = performance.now();
      await apps.close(app);
      expect(performance.now() - closing).toBeLessThan(SHUTDOWN_TIMEOUT_MS + CLOSE_MARGIN_MS);
      await expect(registering).resolves.toBe(false);
      expect(await registeredIds()).not.toContain(`${name}-1`);
      // Nothing lands later either: the closed app's held answer is dropped with its socket.
      p.delayMs = 0;
      await heartbeatsElapsed();
      expect(await registeredIds()).not.toContain(`${name}-1`);
    });

    it(`close() resolves within shutdownTimeoutMs + ${CLOSE_MARGIN_MS} ms when the agent is slow`, async () => {
      const name = 'sd-slow';
      const p = await tap();
      const app = await apps.start(options(name, p.port));
      p.delayMs = 30_000;
      const started = performance.now();
      await apps.close(app);
      expect(performance.now() - started).toBeLessThan(SHUTDOWN_TIMEOUT_MS + CLOSE_MARGIN_MS);
    });

    it(`close() resolves within shutdownTimeoutMs + ${CLOSE_MARGIN_MS} ms when the agent is unreachable`, async () => {
      const name = 'sd-gone';
      const p = await tap();
      const app = await apps.start(options(name, p.port));
      await p.close(); // refused from now on
      const started = performance.now();
      await apps.close(app);
      expect(performance.now() - started).toBeLessThan(SHUTDOWN_TIMEOUT_MS + CLOSE_MARGIN_MS);
      await agent.api().deregisterService(`${name}-1`);
    });
  });
});
