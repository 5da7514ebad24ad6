import 'reflect-metadata';
import { Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { DiscoveryModule } from '../lib/index.js';
import {
  delay,
  max,
  median,
  reportReliability,
  startConsulAgent,
  stopAllAgents,
  waitFor,
  type ConsulAgent,
} from './support/index.js';

// The dev agent restarts RESTARTS times in a row (kill + start on the same ports; a dev agent
// comes back empty) while APPS in-process apps heartbeat (TTL '3s' → a pass every 1 s). Each
// time, every app must be back in ?passing within one heartbeat interval + 1 s, measured from the
// moment the agent answers again (it has a leader and its node in the catalog: start() resolved).
// The next beat gets "does not have associated TTL" and re-registers at once (README "Behaviour").

const APPS = 5;
const RESTARTS = 10;
const HEARTBEAT_MS = 1_000;
const RECOVERY_BOUND_MS = HEARTBEAT_MS + 1_000;
const SERVICE = 'restart-svc';

let agent: ConsulAgent;
const apps: INestApplicationContext[] = [];

beforeAll(async () => {
  agent = await startConsulAgent();
});
afterAll(async () => {
  await Promise.allSettled(apps.map((app) => app.close()));
  await stopAllAgents();
});

async function startApp(i: number): Promise<INestApplicationContext> {
  @Module({
    imports: [
      DiscoveryModule.forRoot({
        consul: { host: '127.0.0.1', port: agent.httpPort, timeoutMs: 2_000 },
        service: { name: SERVICE, id: `${SERVICE}-${i}`, address: '127.0.0.1', port: 45_000 + i },
        healthCheck: { ttl: '3s', deregisterCriticalServiceAfter: '1m' },
        retry: { maxAttempts: 3, initialDelayMs: 50, maxDelayMs: 500 },
        shutdownTimeoutMs: 2_000,
      }),
    ],
  })
  class AppModule {}
  return NestFactory.createApplicationContext(AppModule, { logger: ['error'] });
}

it(`${APPS} heartbeating apps are back in ?passing after each of ${RESTARTS} agent restarts`, async () => {
  const ids = Array.from({ length: APPS }, (_, i) => `${SERVICE}-${i}`);
  apps.push(...(await Promise.all(ids.map((_, i) => startApp(i)))));
  await waitFor(async () => (await agent.api().passingIds(SERVICE)).length === APPS, {
    timeoutMs: 10_000,
    message: `all ${APPS} apps should be in ?passing`,
  });

  const recoveries: { restart: number; fromReadyMs: number; fromKillMs: number; downMs: number }[] =
    [];
  for (let restart = 1; restart <= RESTARTS; restart++) {
    // A random phase of the heartbeat, so that some beats hit the dead agent (connection refused).
    await delay(Math.floor(Math.random() * HEARTBEAT_MS));
    const killedAt = Date.now();
    await agent.kill();
    await agent.start();
    const readyAt = Date.now();
    await waitFor(async () => (await agent.api().passingIds(SERVICE)).length === APPS, {
      timeoutMs: 20_000,
      intervalMs: 20,
      message: `restart ${restart}: all ${APPS} apps back in ?passing`,
    });
    const backAt = Date.now();
    recoveries.push({
      restart,
      fromReadyMs: backAt - readyAt,
      fromKillMs: backAt - killedAt,
      downMs: readyAt - killedAt,
    });
    expect((await agent.api().passingIds(SERVICE)).sort()).toEqual(ids);
  }

  const fromReady = recoveries.map((r) => r.fromReadyMs);
  reportReliability(
    'agent-restarts',
    `apps=${APPS} restarts=${RESTARTS} recovery after the agent answers again ` +
      `median=${median(fromReady)}ms max=${max(fromReady)}ms (bound ${RECOVERY_BOUND_MS}ms); ` +
      `agent kill→ready median=${median(recoveries.map((r) => r.downMs))}ms`,
    { heartbeatMs: HEARTBEAT_MS, recoveries },
  );
  for (const r of recoveries) expect(r.fromReadyMs).toBeLessThanOrEqual(RECOVERY_BOUND_MS);

  // And they still leave cleanly after all that.
  await Promise.all(apps.splice(0).map((app) => app.close()));
  expect(await agent.api().agentServices()).toEqual({});
}, 180_000);
