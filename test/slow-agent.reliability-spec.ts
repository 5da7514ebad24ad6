import 'reflect-metadata';
import { Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import {
  DISCOVERY_PROVIDER,
  DiscoveryModule,
  DiscoveryTimeoutError,
  DiscoveryUnavailableError,
  type ServiceDiscoveryProtocol,
} from '../lib/index.js';
import {
  CapturingLogger,
  backoffBudgetMs,
  freePort,
  reportReliability,
  startConsulAgent,
  startCountingProxy,
  stopAllAgents,
  waitFor,
  type ConsulAgent,
  type CountingProxy,
} from './support/index.js';

// A slow agent: a counting proxy in front of a real agent holds every answer longer than
// consul.timeoutMs. Reads reject with DiscoveryTimeoutError in ≈ timeoutMs, writes resolve false
// within the retry bound, a watched name keeps answering from memory, and app.close() still
// returns within shutdownTimeoutMs although deregistration can never be confirmed.
// (The proxy only delays answers: requests do reach the agent, so the agent may well act on them;
// the client just never hears back in time.)

const TIMEOUT_MS = 500;
const SLOW_MS = 2_000; // every answer arrives this late: 4× TIMEOUT_MS
const RETRY = { maxAttempts: 4, initialDelayMs: 200, maxDelayMs: 1_000 };
/** maxAttempts × timeout + the largest possible backoff sum (full jitter: each ≤ its ceiling). */
const RETRY_BOUND_MS = RETRY.maxAttempts * TIMEOUT_MS + backoffBudgetMs(RETRY);
const SHUTDOWN_TIMEOUT_MS = 1_500;
const MARGIN_MS = 1_000; // timer lag on a loaded 2-core machine
const SERVICE = 'slow-svc';
const SELF_ID = `${SERVICE}-1`;

let agent: ConsulAgent;
let proxy: CountingProxy;
let app: INestApplicationContext | undefined;

beforeAll(async () => {
  agent = await startConsulAgent();
  proxy = await startCountingProxy(agent.httpPort);
});
afterAll(async () => {
  await app?.close();
  await proxy?.close();
  await stopAllAgents();
});

async function timed<T>(work: Promise<T>): Promise<{ value?: T; error?: unknown; ms: number }> {
  const started = Date.now();
  try {
    const value = await work;
    return { value, ms: Date.now() - started };
  } catch (error) {
    return { error, ms: Date.now() - started };
  }
}

it('a slow agent: bounded discover, register false, close within shutdownTimeoutMs', async () => {
  @Module({
    imports: [
      DiscoveryModule.forRoot({
        consul: { host: '127.0.0.1', port: proxy.port, timeoutMs: TIMEOUT_MS },
        service: { name: SERVICE, id: SELF_ID, address: '127.0.0.1', port: 46_001 },
        healthCheck: { ttl: '3s', deregisterCriticalServiceAfter: '1m' },
        retry: RETRY,
        shutdownTimeoutMs: SHUTDOWN_TIMEOUT_MS,
        watch: { services: [SERVICE], waitTime: '10s' },
      }),
    ],
  })
  class AppModule {}
  const logger = new CapturingLogger();
  app = await NestFactory.createApplicationContext(AppModule, { logger });
  const discovery = app.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);

  // Healthy first: registered, watched set known, a direct read answers.
  await waitFor(
    async () =>
      (await agent.api().healthService(SERVICE, { passing: true })).some(
        (e) => e.Service.ID === SELF_ID,
      ),
    { timeoutMs: 10_000, message: 'self should be in ?passing' },
  );
  await waitFor(async () => (await discovery.discover(SERVICE)).length === 1, {
    timeoutMs: 10_000,
    message: 'the watched set should list self',
  });
  expect(await discovery.discover('slow-other')).toEqual([]);

  proxy.delayMs = SLOW_MS;

  // Direct read: one attempt, DiscoveryTimeoutError after ≈ timeoutMs.
  const read = await timed(discovery.discover('slow-other'));
  expect(read.error).toBeInstanceOf(DiscoveryTimeoutError);
  expect(read.ms).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
  expect(read.ms).toBeLessThanOrEqual(TIMEOUT_MS + MARGIN_MS);

  // Watched name: served from memory, at once.
  const watched = await timed(discovery.discover(SERVICE));
  expect(watched.value?.map((i) => i.serviceId)).toEqual([SELF_ID]);
  expect(watched.ms).toBeLessThan(100);

  // Write: false after the retries, within their bound.
  const write = await timed(
    discovery.register({ name: 'slow-other', serviceId: 'slow-other-1', port: 46_002 }),
  );
  expect(write.error).toBeUndefined();
  expect(write.value).toBe(false);
  expect(write.ms).toBeLessThanOrEqual(RETRY_BOUND_MS + MARGIN_MS);

  // Close: deregistration never gets its answer, the teardown is cut at shutdownTimeoutMs.
  const closing = app;
  app = undefined;
  const close = await timed(closing.close());
  expect(close.error).toBeUndefined();
  expect(close.ms).toBeLessThanOrEqual(SHUTDOWN_TIMEOUT_MS + MARGIN_MS);
  expect(logger.lines().join('\n')).toMatch(/Could not deregister "slow-svc-1"/);
  // Every socket of the client is gone (in-flight requests aborted, keep-alive destroyed).
  await waitFor(() => proxy.openConnections === 0, {
    timeoutMs: 2_000,
    message: 'the client should have closed every connection to the proxy',
  });

  reportReliability(
    'slow-agent',
    `timeoutMs=${TIMEOUT_MS} answers delayed ${SLOW_MS}ms: discover rejected (DiscoveryTimeoutError) ` +
      `after ${read.ms}ms; register → false after ${write.ms}ms (bound ${RETRY_BOUND_MS}ms, ` +
      `${RETRY.maxAttempts} attempts); app.close() ${close.ms}ms (shutdownTimeoutMs ${SHUTDOWN_TIMEOUT_MS})`,
    {
      timeoutMs: TIMEOUT_MS,
      delayMs: SLOW_MS,
      retry: RETRY,
      discoverMs: read.ms,
      watchedDiscoverMs: watched.ms,
      registerMs: write.ms,
      registerBoundMs: RETRY_BOUND_MS,
      closeMs: close.ms,
      shutdownTimeoutMs: SHUTDOWN_TIMEOUT_MS,
    },
  );
}, 60_000);

// No agent at all (connection refused). Also the case that shows whether transport failures are
// recognised inside Jest's VM sandbox, where Node core's errors are not `instanceof Error`.
it('an unreachable agent: discover rejects with DiscoveryUnavailableError, register resolves false', async () => {
  const port = await freePort(); // nothing listens there
  @Module({
    imports: [
      DiscoveryModule.forRoot({
        autoRegister: false,
        consul: { host: '127.0.0.1', port, timeoutMs: TIMEOUT_MS },
        retry: RETRY,
        shutdownTimeoutMs: SHUTDOWN_TIMEOUT_MS,
      }),
    ],
  })
  class AppModule {}
  const context = await NestFactory.createApplicationContext(AppModule, { logger: false });
  try {
    const discovery = context.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);

    const read = await timed(discovery.discover('nowhere'));
    expect(read.error).toBeInstanceOf(DiscoveryUnavailableError);
    expect(read.error).not.toBeInstanceOf(DiscoveryTimeoutError);
    expect(read.ms).toBeLessThanOrEqual(TIMEOUT_MS + MARGIN_MS);

    const write = await timed(
      discovery.register({ name: 'nowhere', serviceId: 'nowhere-1', port: 46_003 }),
    );
    expect(write.error).toBeUndefined();
    expect(write.value).toBe(false);
    expect(write.ms).toBeLessThanOrEqual(RETRY_BOUND_MS + MARGIN_MS);
  } finally {
    await context.close();
  }
}, 30_000);
