import type { DiscoveryModuleOptions } from '../lib/index.js';
import {
  delay,
  max,
  median,
  reportReliability,
  startChildApp,
  startConsulAgent,
  startCountingProxy,
  stopAllAgents,
  waitFor,
  type ConsulAgent,
} from './support/index.js';

// SIGTERM against a real process (README "Behaviour" → "Clean exit"): a child Nest app with
// enableShutdownHooks() registers; SIGTERM → it is gone from the agent when 'exit' fires, and
// nothing re-registers it afterwards. Repeated RUNS times, LANES at a time, with the signal at a random phase of the
// heartbeat so that some land while a heartbeat is in flight.

const RUNS = 20;
const LANES = 2;
const TTL = '3s';
const HEARTBEAT_MS = 1_000; // ttl × the default intervalRatio 1/3
const SERVICE = 'sigterm-svc';

interface Run {
  run: number;
  serviceId: string;
  sigtermToExitMs: number;
  sigtermToClosedMs?: number;
  failure?: string;
}

let agent: ConsulAgent;

beforeAll(async () => {
  agent = await startConsulAgent();
});
afterAll(stopAllAgents);

async function oneRun(run: number): Promise<Run> {
  const serviceId = `${SERVICE}-${run}`;
  // Every request of the child goes through this proxy, so once the child has exited its log
  // is complete: a re-registration would be in it.
  const proxy = await startCountingProxy(agent.httpPort);
  const options: DiscoveryModuleOptions = {
    consul: { host: '127.0.0.1', port: proxy.port, timeoutMs: 2_000 },
    service: { name: SERVICE, id: serviceId, address: '127.0.0.1', port: 43_000 + run },
    healthCheck: { ttl: TTL, deregisterCriticalServiceAfter: '1m' },
    retry: { maxAttempts: 3, initialDelayMs: 50, maxDelayMs: 200 },
  };
  const child = startChildApp({ options });
  const result: Run = { run, serviceId, sigtermToExitMs: NaN };
  const fail = (why: string): Run => {
    result.failure ??= `${why}\n--- child output ---\n${child.output().slice(-3_000)}`;
    return result;
  };
  try {
    await child.next('armed');
    await waitFor(async () => (await agent.api().passingIds(SERVICE)).includes(serviceId), {
      timeoutMs: 10_000,
      message: `${serviceId} should be in ?passing`,
    });
    // A random phase of the heartbeat (pacing, not proof): some signals land while a pass is
    // in flight.
    await delay(Math.floor(Math.random() * HEARTBEAT_MS));

    // Read the agent the moment 'exit' fires: the requests start synchronously in the listener.
    let atExit!: Promise<{ services: string[]; passing: string[] }>;
    child.onExit(() => {
      atExit = Promise.all([agent.api().agentServices(), agent.api().passingIds(SERVICE)]).then(
        ([services, passing]) => ({ services: Object.keys(services), passing }),
      );
    });
    child.kill('SIGTERM');
    const giveUp = new AbortController();
    const exit = await Promise.race([
      child.exited,
      delay(10_000, giveUp.signal).then(
        () => undefined,
        () => undefined,
      ),
    ]);
    giveUp.abort();
    if (!exit) {
      child.kill('SIGKILL');
      return fail('did not exit within 10 s of SIGTERM');
    }
    result.sigtermToExitMs = exit.at - (child.signalledAt ?? NaN);
    const hooksDone = child.receivedAt('hooks-done');
    if (hooksDone !== undefined) result.sigtermToClosedMs = hooksDone - (child.signalledAt ?? NaN);
    const seen = await atExit;
    // Nest closes the app, then re-raises the signal: the one correct way to end.
    if (exit.signal !== 'SIGTERM' || exit.code !== null) {
      return fail(`exited with code ${exit.code}, signal ${exit.signal}`);
    }
    if (hooksDone === undefined) return fail('exited without finishing its shutdown hooks');
    if (seen.services.includes(serviceId) || seen.passing.includes(serviceId)) {
      return fail(`still registered when 'exit' fired: ${JSON.stringify(seen)}`);
    }
    // A heartbeat or re-registration still in flight must not bring it back: only the boot
    // registration went out, and the agent does not hold the instance.
    const registers = proxy.requests('/v1/agent/service/register').length;
    if (registers !== 1) return fail(`${registers} registrations sent (expected the boot one)`);
    if (proxy.matching(`/v1/agent/service/deregister/${serviceId} `).length !== 1) {
      return fail('no deregistration went out');
    }
    const later = Object.keys(await agent.api().agentServices());
    if (later.includes(serviceId)) return fail(`re-registered after exit: ${later.join(', ')}`);
    return result;
  } catch (error) {
    child.kill('SIGKILL');
    return fail((error as Error).message);
  } finally {
    await proxy.close();
  }
}

it(`SIGTERM ${RUNS}×: deregistered before exit, never re-registered`, async () => {
  const runs: Run[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: LANES }, async () => {
      while (next < RUNS) runs.push(await oneRun(next++));
    }),
  );
  runs.sort((a, b) => a.run - b.run);

  const failures = runs.filter((r) => r.failure !== undefined);
  const exitMs = runs.filter((r) => !r.failure).map((r) => r.sigtermToExitMs);
  const closedMs = runs
    .filter((r) => !r.failure && r.sigtermToClosedMs !== undefined)
    .map((r) => r.sigtermToClosedMs as number);
  reportReliability(
    'sigterm',
    `runs=${runs.length} failures=${failures.length} ` +
      `SIGTERM→exit median=${median(exitMs)}ms max=${max(exitMs)}ms ` +
      `(SIGTERM→hooks done median=${median(closedMs)}ms max=${max(closedMs)}ms)`,
    { runs, ttl: TTL, lanes: LANES },
  );

  expect(failures.map((f) => `run ${f.run}: ${f.failure}`)).toEqual([]);
  expect(runs).toHaveLength(RUNS);
  // Nothing of this service is left on the agent.
  expect(Object.keys(await agent.api().agentServices())).toEqual([]);
}, 240_000);
