import type { DiscoveryModuleOptions } from '../lib/index.js';
import {
  max,
  median,
  reportReliability,
  startChildApp,
  startConsulAgent,
  stopAllAgents,
  waitFor,
  type ChildApp,
  type ConsulAgent,
} from './support/index.js';

// SIGKILL: no hook runs, so only Consul's own mechanisms remove the instance. With TTL '3s' it
// leaves ?passing within one TTL of the kill (the last pass was at most one heartbeat before);
// with deregisterCriticalServiceAfter '1m' the agent's reaper (every 30 s) removes it 60–90 s
// after it went critical. CHILDREN apps are killed at the same moment for more data points.

const CHILDREN = 3;
const TTL_MS = 3_000;
const LEAVE_MARGIN_MS = 2_000; // a loaded 2-core machine: timer lag on the agent and here
const REMOVAL_BOUND_MS = 100_000;
const SERVICE = 'crash-svc';

let agent: ConsulAgent;
const children: ChildApp[] = [];

beforeAll(async () => {
  agent = await startConsulAgent();
});
afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await stopAllAgents();
});

it(`SIGKILL: out of ?passing within one TTL, reaped by the agent within ${REMOVAL_BOUND_MS / 1000} s`, async () => {
  const ids = Array.from({ length: CHILDREN }, (_, i) => `${SERVICE}-${i}`);
  for (const [i, id] of ids.entries()) {
    const options: DiscoveryModuleOptions = {
      consul: { host: '127.0.0.1', port: agent.httpPort, timeoutMs: 2_000 },
      service: { name: SERVICE, id, address: '127.0.0.1', port: 44_000 + i },
      healthCheck: { ttl: `${TTL_MS / 1000}s`, deregisterCriticalServiceAfter: '1m' },
      retry: { maxAttempts: 3, initialDelayMs: 50, maxDelayMs: 200 },
    };
    children.push(startChildApp({ options }));
  }
  await Promise.all(children.map((c) => c.next('ready')));
  await waitFor(
    async () => {
      const passing = await agent.api().passingIds(SERVICE);
      return ids.every((id) => passing.includes(id));
    },
    { timeoutMs: 15_000, message: 'every child should be in ?passing' },
  );

  for (const child of children) child.kill('SIGKILL');
  const killedAt = Date.now();
  await Promise.all(children.map((c) => c.exited));

  // Out of ?passing: polled every 50 ms.
  const leftAt = new Map<string, number>();
  await waitFor(
    async () => {
      const now = await agent.api().passingIds(SERVICE);
      const at = Date.now();
      for (const id of ids) if (!now.includes(id) && !leftAt.has(id)) leftAt.set(id, at);
      return leftAt.size === ids.length;
    },
    { timeoutMs: TTL_MS + LEAVE_MARGIN_MS + 5_000, intervalMs: 50, message: 'leave ?passing' },
  );
  const leftMs = ids.map((id) => (leftAt.get(id) as number) - killedAt);

  // Reaped: gone from the agent's services (and so from the catalog), polled every 250 ms.
  const removedAt = new Map<string, number>();
  await waitFor(
    async () => {
      const services = Object.keys(await agent.api().agentServices());
      const at = Date.now();
      for (const id of ids) if (!services.includes(id) && !removedAt.has(id)) removedAt.set(id, at);
      return removedAt.size === ids.length;
    },
    { timeoutMs: REMOVAL_BOUND_MS + 10_000, intervalMs: 250, message: 'reaped by the agent' },
  );
  const removedMs = ids.map((id) => (removedAt.get(id) as number) - killedAt);
  expect(await agent.api().healthService(SERVICE)).toEqual([]);

  reportReliability(
    'crash',
    `instances=${CHILDREN} SIGKILL→out of ?passing median=${median(leftMs)}ms max=${max(leftMs)}ms ` +
      `(TTL ${TTL_MS}ms); SIGKILL→reaped median=${median(removedMs)}ms max=${max(removedMs)}ms`,
    { ttlMs: TTL_MS, deregisterCriticalServiceAfter: '1m', leftMs, removedMs },
  );
  for (const ms of leftMs) expect(ms).toBeLessThanOrEqual(TTL_MS + LEAVE_MARGIN_MS);
  for (const ms of removedMs) expect(ms).toBeLessThanOrEqual(REMOVAL_BOUND_MS);
}, 180_000);
