import 'reflect-metadata';
import { Module, type INestApplicationContext, type LoggerService } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import {
  DISCOVERY_PROVIDER,
  DiscoveryModule,
  DiscoveryService,
  type ServiceDiscoveryProtocol,
} from '../lib/index.js';
import {
  delay,
  max,
  median,
  reportReliability,
  startConsulCluster,
  stopAllClusters,
  waitFor,
  type ClusterNode,
  type ConsulCluster,
} from './support/index.js';

// A real 3-server cluster + 1 client agent (127.0.0.2–.5). The app talks to the client agent,
// watches its own service name, and registered instances before the leader is SIGKILLed.
// Through the election: watched discover() keeps answering with the last known set. After it:
// register(), the TTL heartbeat and direct (unwatched, tag-filtered) discover() work again with
// no app restart, and no registration made before the kill is lost.

const SERVICE = 'cluster-svc';
const SELF_ID = `${SERVICE}-self`;
const TAG = 'v1';
const EXTRA = 4; // instances registered through register() before the kill
const TTL_MS = 3_000;

/** Keeps the app's warnings (heartbeat timeouts, stale watch) for the report instead of printing. */
class WarningsLogger implements LoggerService {
  readonly lines: string[] = [];
  log(): void {}
  warn(message: unknown): void {
    this.lines.push(`warn ${String(message)}`);
  }
  error(message: unknown): void {
    this.lines.push(`error ${String(message)}`);
  }
}

let cluster: ConsulCluster;
let app: INestApplicationContext | undefined;

beforeAll(async () => {
  cluster = await startConsulCluster();
});
afterAll(async () => {
  await app?.close();
  await stopAllClusters();
});

/** Passing ids of SERVICE as a server (not the client agent) sees them in the catalog. */
async function catalogPassing(server: ClusterNode): Promise<string[]> {
  const entries = await server.api().healthService(SERVICE, { passing: true });
  return entries.map((e) => e.Service.ID).sort();
}

it('SIGKILL of the leader: watched reads keep answering, everything works again after the election', async () => {
  const { client } = cluster;
  @Module({
    imports: [
      DiscoveryModule.forRoot({
        consul: { host: client.bind, port: client.httpPort, timeoutMs: 2_000 },
        service: {
          name: SERVICE,
          id: SELF_ID,
          address: '127.0.0.1',
          port: 47_000,
          tags: [TAG],
        },
        healthCheck: { ttl: `${TTL_MS / 1000}s`, deregisterCriticalServiceAfter: '1m' },
        retry: { maxAttempts: 4, initialDelayMs: 100, maxDelayMs: 1_000 },
        watch: { services: [SERVICE], waitTime: '10s' },
        shutdownTimeoutMs: 3_000,
      }),
    ],
  })
  class AppModule {}
  const logger = new WarningsLogger();
  app = await NestFactory.createApplicationContext(AppModule, { logger });
  const discovery = app.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
  const service = app.get(DiscoveryService);

  const extraIds = Array.from({ length: EXTRA }, (_, i) => `${SERVICE}-${i + 1}`);
  for (const [i, serviceId] of extraIds.entries()) {
    const ok = await discovery.register({
      name: SERVICE,
      serviceId,
      address: '127.0.0.1',
      port: 47_001 + i,
      tags: [TAG],
    });
    expect(ok).toBe(true);
  }
  const before = [SELF_ID, ...extraIds].sort();
  await waitFor(
    async () =>
      JSON.stringify((await discovery.discover(SERVICE)).map((i) => i.serviceId)) ===
      JSON.stringify(before),
    { timeoutMs: 15_000, message: 'the watched set should list every instance' },
  );
  expect(service.snapshot(SERVICE)?.map((i) => i.serviceId)).toEqual(before);

  // The self TTL check, as the client agent holds it, watched the whole time from now on.
  // The client agent may hold even local reads while its anti-entropy sync waits for a leader:
  // a read that fails or times out is recorded apart, only answered statuses are asserted.
  const checkStates: string[] = [];
  const checkReadErrors: string[] = [];
  let watchingChecks = true;
  const checkWatcher = (async () => {
    while (watchingChecks) {
      try {
        const checks = await client.api().agentChecks();
        checkStates.push(checks[`service:${SELF_ID}`]?.Status ?? 'missing');
      } catch (error) {
        checkReadErrors.push((error as Error).message);
      }
      await delay(100);
    }
  })();

  // Kill the leader.
  const oldLeader = await cluster.leader();
  if (!oldLeader) throw new Error('no leader before the kill');
  const killedAt = Date.now();
  await oldLeader.kill();
  const survivors = cluster.servers.filter((s) => s !== oldLeader);

  // Watched reads, every 50 ms, until a new leader is elected (and a little beyond).
  const watchedReads: { ms: number; ids: string; stale?: boolean }[] = [];
  const watchedErrors: string[] = [];
  let electing = true;
  const reader = (async () => {
    while (electing) {
      const started = Date.now();
      try {
        const ids = (await discovery.discover(SERVICE)).map((i) => i.serviceId).sort();
        const stale = service.freshness(SERVICE)?.stale;
        watchedReads.push({ ms: Date.now() - started, ids: ids.join(','), stale });
      } catch (error) {
        watchedErrors.push((error as Error).message);
      }
      await delay(50);
    }
  })();
  // For contrast, direct reads during the same window (not asserted: they may fail or time out).
  const directDuring: string[] = [];
  const directReader = (async () => {
    while (electing) {
      const started = Date.now();
      try {
        const n = (await discovery.discover(SERVICE, { tag: TAG })).length;
        directDuring.push(`ok(${n}) ${Date.now() - started}ms`);
      } catch (error) {
        directDuring.push(`${(error as Error).name} ${Date.now() - started}ms`);
      }
      await delay(200);
    }
  })();
  const newLeader = await waitFor(
    async () => {
      const leader = await cluster.leader();
      return leader && leader !== oldLeader ? leader : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 50, message: 'a new leader should be elected' },
  );
  const electedAt = Date.now();
  const electionMs = electedAt - killedAt;

  // Direct (unwatched) read with a tag: the client agent forwards it to a server again.
  await waitFor(
    async () =>
      JSON.stringify((await discovery.discover(SERVICE, { tag: TAG })).map((i) => i.serviceId)) ===
      JSON.stringify(before),
    { timeoutMs: 20_000, intervalMs: 50, message: 'a direct discover() should answer again' },
  );
  const directBackMs = Date.now() - electedAt;
  electing = false;
  await Promise.all([reader, directReader]);

  // A new registration is accepted and reaches the servers' catalog.
  const lateId = `${SERVICE}-after`;
  const registerStarted = Date.now();
  expect(
    await discovery.register({
      name: SERVICE,
      serviceId: lateId,
      address: '127.0.0.1',
      port: 47_100,
      tags: [TAG],
    }),
  ).toBe(true);
  const after = [...before, lateId].sort();
  await waitFor(async () => (await catalogPassing(survivors[0])).includes(lateId), {
    timeoutMs: 20_000,
    intervalMs: 50,
    message: 'the registration made after the election should reach the catalog',
  });
  const lateCatalogMs = Date.now() - registerStarted;
  // The watch follows again (its long-poll is back): it sees the new instance.
  await waitFor(
    () =>
      JSON.stringify(service.snapshot(SERVICE)?.map((i) => i.serviceId)) === JSON.stringify(after),
    { timeoutMs: 20_000, message: 'the watch should see the new registration' },
  );
  const watchBackMs = Date.now() - registerStarted;

  // 0 lost registrations, as every surviving server sees the catalog.
  for (const server of survivors) expect(await catalogPassing(server)).toEqual(after);

  // The heartbeat keeps self passing for longer than one TTL after the election.
  const heartbeatUntil = Date.now() + TTL_MS + 1_000;
  while (Date.now() < heartbeatUntil) {
    expect(await catalogPassing(newLeader)).toContain(SELF_ID);
    await delay(250);
  }
  watchingChecks = false;
  await checkWatcher;

  // And it still leaves cleanly through the client agent: self is gone from the servers' catalog.
  const closing = app;
  app = undefined;
  await closing.close();
  await waitFor(async () => !(await catalogPassing(newLeader)).includes(SELF_ID), {
    timeoutMs: 10_000,
    message: 'self should be deregistered from the catalog after app.close()',
  });

  reportReliability(
    'cluster',
    `leader SIGKILL → new leader in ${electionMs}ms; watched discover() answered ` +
      `${watchedReads.length}× during the election (max ${max(watchedReads.map((r) => r.ms))}ms, ` +
      `${watchedReads.filter((r) => r.stale).length} of them while the watch was stale, ` +
      `${watchedErrors.length} errors); direct discover() back ${directBackMs}ms after the ` +
      `election; new registration in the catalog ${lateCatalogMs}ms after register(), in the watch ` +
      `${watchBackMs}ms; lost registrations 0/${before.length}`,
    {
      electionMs,
      watchedReads: watchedReads.length,
      watchedReadMedianMs: median(watchedReads.map((r) => r.ms)),
      watchedReadMaxMs: max(watchedReads.map((r) => r.ms)),
      watchedErrors,
      watchedReadsWhileStale: watchedReads.filter((r) => r.stale).length,
      directReadsDuringElection: directDuring,
      directBackMs,
      lateCatalogMs,
      watchBackMs,
      checkStates: [...new Set(checkStates)],
      checkReads: checkStates.length,
      checkReadErrors,
      appWarnings: logger.lines,
      oldLeader: oldLeader.name,
      newLeader: newLeader.name,
    },
  );
  expect(watchedErrors).toEqual([]);
  expect(watchedReads.length).toBeGreaterThan(0);
  for (const read of watchedReads) expect(read.ids).toEqual(before.join(','));
  expect([...new Set(checkStates)]).toEqual(['passing']);
}, 120_000);
