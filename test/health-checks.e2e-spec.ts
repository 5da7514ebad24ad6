import 'reflect-metadata';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import {
  DISCOVERY_PROVIDER,
  DiscoveryModule,
  DiscoveryService,
  type DiscoveryModuleOptions,
  type ServiceDiscoveryProtocol,
} from '../lib/index.js';
import {
  persistedCheck,
  startConsulAgent,
  stopAllAgents,
  waitFor,
  type ConsulAgent,
} from './support/index.js';

// HTTP, TCP and TTL checks run by a real Consul dev agent against endpoints served by this test
// (127.0.0.1 only), and the check definitions the agent ends up holding.

let agent: ConsulAgent;
let dataDir: string;

// ---- an HTTP endpoint whose answer the test controls, per path ----------------------------

interface SeenRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
}

const statusByPath = new Map<string, number>();
const seen: SeenRequest[] = [];
let httpServer: http.Server;
let httpBase: string;

function startHttpEndpoint(): Promise<void> {
  httpServer = http.createServer((req, res) => {
    const reqPath = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
    seen.push({ method: req.method ?? '', path: reqPath, headers: req.headers });
    const status = statusByPath.get(reqPath) ?? 200;
    res.writeHead(status, { 'Content-Type': 'text/plain' });
    res.end(status === 200 ? 'ok' : `status ${status}`);
  });
  return new Promise((resolve) => {
    httpServer.listen(0, '127.0.0.1', () => {
      httpBase = `http://127.0.0.1:${(httpServer.address() as net.AddressInfo).port}`;
      resolve();
    });
  });
}

function stopHttpEndpoint(): Promise<void> {
  httpServer.closeAllConnections();
  return new Promise((resolve) => httpServer.close(() => resolve()));
}

// ---- a TCP endpoint --------------------------------------------------------------------------

interface TcpEndpoint {
  target: string;
  close(): Promise<void>;
}

function startTcpEndpoint(): Promise<TcpEndpoint> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.end();
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      resolve({
        target: `127.0.0.1:${port}`,
        close: () =>
          new Promise<void>((done) => {
            for (const socket of sockets) socket.destroy();
            server.close(() => done());
          }),
      });
    });
  });
}

// ---- apps ------------------------------------------------------------------------------------

const open = new Set<INestApplicationContext>();
const cleanups: (() => Promise<unknown>)[] = [];

async function createApp(extra: DiscoveryModuleOptions): Promise<INestApplicationContext> {
  const app = await NestFactory.createApplicationContext(
    DiscoveryModule.forRoot({
      consul: { host: '127.0.0.1', port: agent.httpPort, timeoutMs: 1000 },
      retry: { maxAttempts: 2, initialDelayMs: 20, maxDelayMs: 100 },
      ...extra,
    }),
    { logger: false },
  );
  open.add(app);
  await app.init();
  return app;
}

async function closeApp(app: INestApplicationContext): Promise<void> {
  open.delete(app);
  await app.close();
}

/** Bounded wait until discover(name) lists exactly `ids`. */
function discoverUntil(
  discovery: ServiceDiscoveryProtocol,
  name: string,
  ids: string[],
  timeoutMs = 10_000,
): Promise<true> {
  return waitFor(
    async () =>
      JSON.stringify((await discovery.discover(name)).map((i) => i.serviceId)) ===
      JSON.stringify(ids),
    { timeoutMs, intervalMs: 50, message: `discover('${name}') never listed ${ids.join(',')}` },
  );
}

async function checkOf(checkId: string) {
  return (await agent.api().agentChecks())[checkId];
}

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'health-checks-e2e-'));
  agent = await startConsulAgent({ extraArgs: ['-data-dir', dataDir] });
  await startHttpEndpoint();
});

afterEach(async () => {
  await Promise.all([...open].map((app) => closeApp(app)));
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

afterAll(async () => {
  await stopAllAgents();
  await stopHttpEndpoint();
  await rm(dataDir, { recursive: true, force: true });
});

describe('health checks run by the agent', () => {
  it('HTTP check (self registration) reaches passing and shows in discover(); 500 takes the instance out, 200 brings it back', async () => {
    const url = `${httpBase}/health/web`;
    const app = await createApp({
      service: { name: 'web', id: 'web-1', address: '127.0.0.1', port: 3201 },
      healthCheck: { http: url, interval: '1s' },
    });
    const discovery = app.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
    expect((await agent.api().agentServices())['web-1']).toMatchObject({ Service: 'web' });

    await discoverUntil(discovery, 'web', ['web-1']);
    const passing = await checkOf('service:web-1');
    expect(passing).toMatchObject({ Type: 'http', Status: 'passing', ServiceID: 'web-1' });
    expect(passing.Output).toContain(`HTTP GET ${url}: 200 OK`);
    expect(seen.some((r) => r.path === '/health/web' && r.method === 'GET')).toBe(true);
    expect(await persistedCheck(dataDir, 'service:web-1')).toMatchObject({
      HTTP: url,
      Interval: 1e9,
      Timeout: 5e9, // the default
    });

    statusByPath.set('/health/web', 500);
    await discoverUntil(discovery, 'web', []);
    const critical = await checkOf('service:web-1');
    expect(critical.Status).toBe('critical');
    expect(critical.Output).toContain('500');

    statusByPath.set('/health/web', 200);
    await discoverUntil(discovery, 'web', ['web-1']);

    // 429 is Consul's "warning": not passing, so not discovered either.
    statusByPath.set('/health/web', 429);
    await waitFor(async () => (await checkOf('service:web-1')).Status === 'warning', {
      timeoutMs: 10_000,
      message: 'the HTTP check never turned warning on 429',
    });
    expect(await discovery.discover('web')).toEqual([]);
    statusByPath.delete('/health/web');

    await closeApp(app);
    expect(await agent.api().agentServices()).not.toHaveProperty(['web-1']);
  });

  it('TCP check (registered through DISCOVERY_PROVIDER) reaches passing and shows in discover(); a closed port takes it out', async () => {
    const tcp = await startTcpEndpoint();
    let closed = false;
    cleanups.push(() => (closed ? Promise.resolve() : tcp.close()));
    const app = await createApp({ autoRegister: false });
    const discovery = app.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);

    await expect(
      discovery.register({
        name: 'cache',
        serviceId: 'cache-1',
        address: '127.0.0.1',
        port: Number(tcp.target.split(':')[1]),
        healthCheck: { tcp: tcp.target, interval: '1s' },
      }),
    ).resolves.toBe(true);
    cleanups.push(() => agent.api().deregisterService('cache-1'));

    await discoverUntil(discovery, 'cache', ['cache-1']);
    expect(await checkOf('service:cache-1')).toMatchObject({
      Type: 'tcp',
      Status: 'passing',
      ServiceID: 'cache-1',
    });
    expect((await checkOf('service:cache-1')).Output).toContain(tcp.target);

    await tcp.close();
    closed = true;
    await discoverUntil(discovery, 'cache', []);
    expect((await checkOf('service:cache-1')).Status).toBe('critical');
  });

  it('TTL check (self registration) is passing when init resolves and shows in discover()', async () => {
    const app = await createApp({
      service: { name: 'worker', id: 'worker-1', address: '127.0.0.1', port: 3203 },
      healthCheck: { ttl: '2s' },
    });
    expect(await checkOf('service:worker-1')).toMatchObject({ Type: 'ttl', Status: 'passing' });
    expect((await app.get(DiscoveryService).discover('worker')).map((i) => i.serviceId)).toEqual([
      'worker-1',
    ]);
    expect(await persistedCheck(dataDir, 'service:worker-1')).toMatchObject({
      TTL: 2e9,
      HTTP: '',
      TCP: '',
    });
  });
});

describe('check definitions the agent holds', () => {
  it('HTTP: URL, interval, default timeout 5s, method, header, tlsSkipVerify, deregisterCriticalServiceAfter', async () => {
    const app = await createApp({ autoRegister: false });
    const discovery = app.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
    const url = `${httpBase}/probe/api`;

    await expect(
      discovery.register({
        name: 'api',
        serviceId: 'api-1',
        address: '127.0.0.1',
        port: 3204,
        healthCheck: {
          http: url,
          interval: '1s',
          method: 'POST',
          header: { 'X-Probe': ['yes'], 'X-Multi': ['a', 'b'] },
          tlsSkipVerify: true,
          deregisterCriticalServiceAfter: '1m',
        },
      }),
    ).resolves.toBe(true);
    cleanups.push(() => agent.api().deregisterService('api-1'));

    expect(await persistedCheck(dataDir, 'service:api-1')).toMatchObject({
      HTTP: url,
      Method: 'POST',
      Header: { 'X-Probe': ['yes'], 'X-Multi': ['a', 'b'] },
      Interval: 1e9,
      Timeout: 5e9,
      TLSSkipVerify: true,
      DeregisterCriticalServiceAfter: 60e9,
    });
    expect(await checkOf('service:api-1')).toMatchObject({ Type: 'http', ServiceID: 'api-1' });

    // And the agent really probes that way.
    const probe = await waitFor(() => seen.find((r) => r.path === '/probe/api'), {
      timeoutMs: 5000,
      message: 'the agent never probed /probe/api',
    });
    expect(probe.method).toBe('POST');
    expect(probe.headers['x-probe']).toBe('yes');
    expect(probe.headers['x-multi']).toBe('a, b');
    await discoverUntil(discovery, 'api', ['api-1']);
    expect((await checkOf('service:api-1')).Output).toContain(`HTTP POST ${url}: 200 OK`);
  });

  it('HTTP with an explicit timeout; TCP with defaults (interval 10s, timeout 5s)', async () => {
    const app = await createApp({ autoRegister: false });
    const discovery = app.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
    const tcp = await startTcpEndpoint();
    cleanups.push(() => tcp.close());

    await expect(
      discovery.register({
        name: 'slow',
        serviceId: 'slow-1',
        address: '127.0.0.1',
        port: 3205,
        healthCheck: { http: `${httpBase}/probe/slow`, interval: '2s', timeout: '750ms' },
      }),
    ).resolves.toBe(true);
    cleanups.push(() => agent.api().deregisterService('slow-1'));
    await expect(
      discovery.register({
        name: 'db',
        serviceId: 'db-1',
        address: '127.0.0.1',
        port: 3206,
        healthCheck: { tcp: tcp.target, deregisterCriticalServiceAfter: '2m' },
      }),
    ).resolves.toBe(true);
    cleanups.push(() => agent.api().deregisterService('db-1'));

    expect(await persistedCheck(dataDir, 'service:slow-1')).toMatchObject({
      HTTP: `${httpBase}/probe/slow`,
      Method: '',
      Header: null,
      Interval: 2e9,
      Timeout: 750e6,
      TLSSkipVerify: false,
      DeregisterCriticalServiceAfter: 0,
    });
    expect(await persistedCheck(dataDir, 'service:db-1')).toMatchObject({
      TCP: tcp.target,
      HTTP: '',
      Interval: 10e9,
      Timeout: 5e9,
      DeregisterCriticalServiceAfter: 120e9,
    });
    expect(await checkOf('service:db-1')).toMatchObject({ Type: 'tcp', ServiceID: 'db-1' });
  });
});
