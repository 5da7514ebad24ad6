import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { brotliCompressSync, gunzipSync, gzipSync } from 'node:zlib';
import axios, { isAxiosError } from 'axios';
import {
  connect,
  createServer as createTcpServer,
  type Server as TcpServer,
  type Socket,
} from 'node:net';
import type { AddressInfo } from 'node:net';
import { WebSocket, type Dispatcher } from 'undici';
import {
  DiscoveryError,
  DiscoveryHttpClient,
  DiscoveryTimeoutError,
  DiscoveryUnavailableError,
  type DiscoveryModuleOptions,
} from '../lib/index.js';
import { WatchRegistry } from '../lib/watch/watch.registry.js';
import {
  freePort,
  issueServerCert,
  makeTestCa,
  startConsulAgent,
  stopAllAgents,
  tapHttpAttempts,
  TestApps,
  waitFor,
  type ConsulAgent,
  type TestCa,
} from './support/index.js';

// DiscoveryHttpClient the way real deployments use it (instance identity, every request kind,
// per-service budgets, TLS by name, watches bounded by use): a real agent, loopback servers in
// this process.

interface Backend {
  server: Server;
  port: number;
  origin: string;
  /** Milliseconds to wait before answering `/slow`. */
  slowMs: number;
  status: number;
}

const servers: { close(cb: () => void): void }[] = [];
const sockets = new Set<Socket>();
const stopped: ChildProcess[] = [];

async function listen<T extends Server | TcpServer>(server: T): Promise<number> {
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  servers.push(server);
  return (server.address() as AddressInfo).port;
}

async function startBackend(name: string): Promise<Backend> {
  const server = createServer();
  const backend = { server, port: 0, origin: '', slowMs: 300, status: 200 };
  server.on('request', (req, res) => {
    req.resume();
    const answer = (): void => {
      res.writeHead(backend.status, { 'content-type': 'text/plain' });
      res.end(name);
    };
    if (req.url === '/slow') setTimeout(answer, backend.slowMs).unref();
    else answer();
  });
  // A WebSocket handshake; CONNECT answered 200 and the name.
  server.on('upgrade', (req, socket: Socket) => {
    const accept = createHash('sha1')
      .update(`${String(req.headers['sec-websocket-key'])}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
      .digest('base64');
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
  });
  server.on('connect', (_req, socket: Socket) => {
    socket.end(`HTTP/1.1 200 Connection Established\r\n\r\n${name}`);
  });
  backend.port = await listen(server);
  backend.origin = `http://127.0.0.1:${backend.port}`;
  return backend;
}

/**
 * A port whose connects hang: a listener in a SIGSTOPped child with its accept queue filled, so
 * the kernel drops further SYNs (Linux).
 */
async function stoppedListener(): Promise<number> {
  const listener =
    "require('net').createServer().listen({ port: 0, host: '127.0.0.1', backlog: 1 }, " +
    'function () { process.send(this.address().port); });';
  const child = spawn(process.execPath, ['-e', listener], {
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const [port] = (await once(child, 'message')) as [number];
  child.kill('SIGSTOP');
  stopped.push(child);
  for (let i = 0; i < 4; i++) {
    const filler = connect(port, '127.0.0.1');
    filler.on('error', () => undefined);
    sockets.add(filler);
  }
  return port;
}

/** A TCP server that closes every connection at once: a TLS handshake to it fails. */
async function slammer(): Promise<number> {
  return listen(createTcpServer((socket) => socket.destroy()));
}

describe('DiscoveryHttpClient in real deployments', () => {
  const apps = new TestApps();
  let agent: ConsulAgent;

  const options = (
    http: DiscoveryModuleOptions['http'] = {},
    extra: Partial<DiscoveryModuleOptions> = {},
  ): DiscoveryModuleOptions => ({
    autoRegister: false,
    consul: { host: '127.0.0.1', port: agent.httpPort, timeoutMs: 2_000 },
    shutdownTimeoutMs: 2_000,
    http,
    ...extra,
  });

  async function register(name: string, id: string, port: number): Promise<void> {
    await agent.api().registerService({
      Name: name,
      ID: id,
      Address: '127.0.0.1',
      Port: port,
      Check: { TTL: '60s', Status: 'passing' },
    });
  }

  /** A service registered in the catalog on an external node (no checks: passing). */
  async function registerOnNode(node: string, name: string, id: string, port: number) {
    const response = await agent.api().request('PUT', '/v1/catalog/register', {
      Node: node,
      Address: '127.0.0.1',
      Service: { ID: id, Service: name, Address: '127.0.0.1', Port: port },
    });
    expect(response.status).toBe(200);
  }

  beforeAll(async () => {
    agent = await startConsulAgent();
  });
  afterEach(() => apps.closeAll());
  afterAll(async () => {
    for (const child of stopped) child.kill('SIGKILL');
    for (const socket of sockets) socket.destroy();
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    await stopAllAgents();
  });

  async function settle<T>(
    promise: Promise<T>,
  ): Promise<{ ok: true } | { ok: false; error: Error }> {
    try {
      await promise;
      return { ok: true };
    } catch (error) {
      return { ok: false, error: error as Error };
    }
  }

  it('1: the same service ID on two nodes is two instances (a dead one is retried away)', async () => {
    const live = await startBackend('live');
    const deadPort = await freePort();
    await registerOnNode('node-a', 'twin', 'twin', live.port);
    await registerOnNode('node-b', 'twin', 'twin', deadPort);
    const app = await apps.create(options());
    const http = app.get(DiscoveryHttpClient);
    let ok = 0;
    const failed: string[] = [];
    for (let i = 0; i < 20; i++) {
      const outcome = await settle(http.fetch('http://twin/').then((r) => r.text()));
      if (outcome.ok) ok++;
      else
        failed.push(String((outcome.error.cause as Error | undefined)?.message ?? outcome.error));
    }
    expect({ ok, failed }).toEqual({ ok: 20, failed: [] });
  });

  it("2: the caller's deadline or abort is not the instance's failure: no retry, no ejection", async () => {
    const a = await startBackend('a');
    const b = await startBackend('b');
    await register('patient', 'patient-a', a.port);
    await register('patient', 'patient-b', b.port);
    const app = await apps.create(options({ outlier: { consecutiveFailures: 2 } }));
    const http = app.get(DiscoveryHttpClient);
    await (await http.fetch('http://patient/')).text(); // resolved, both known
    const tap = tapHttpAttempts([a.origin, b.origin]);
    try {
      for (let i = 0; i < 6; i++) {
        await expect(http.fetch('http://patient/slow', { deadlineMs: 50 })).rejects.toBeInstanceOf(
          DiscoveryTimeoutError,
        );
        await expect(
          http.fetch('http://patient/slow', { signal: AbortSignal.timeout(50) }),
        ).rejects.toThrow();
      }
      expect(tap.attempts).toHaveLength(12); // one attempt per call: nothing retried
      const answers = new Map<string, number>();
      for (let i = 0; i < 10; i++) {
        const who = await (await http.fetch('http://patient/')).text();
        answers.set(who, (answers.get(who) ?? 0) + 1);
      }
      expect(Object.fromEntries(answers)).toEqual({ a: 5, b: 5 }); // neither was ejected
    } finally {
      tap.close();
    }
  });

  it('3: the deadline is honoured within ~50 ms while a retry is still connecting', async () => {
    const answering503 = await startBackend('503');
    answering503.status = 503;
    await register('handshake', 'handshake-503', answering503.port);
    await register('handshake', 'handshake-hanging', await stoppedListener());
    const app = await apps.create(options({ timeouts: { connectMs: 5_000 } }));
    const http = app.get(DiscoveryHttpClient);
    // Two calls: round-robin starts one on each instance, so one of them has had its 503 and
    // retries onto the hanging connect when the deadline passes.
    for (let i = 0; i < 2; i++) {
      const started = performance.now();
      const outcome = await settle(http.fetch('http://handshake/', { deadlineMs: 200 }));
      const tookMs = Math.round(performance.now() - started);
      const error = outcome.ok ? undefined : outcome.error;
      expect({ error: error?.name, late: tookMs > 200 + 150 ? tookMs : false }).toEqual({
        error: 'DiscoveryTimeoutError',
        late: false,
      });
    }
  });

  it('4: upgrade, CONNECT and WebSocket work through the dispatcher, by name and passing through', async () => {
    const backend = await startBackend('ws');
    await register('sockets', 'sockets-1', backend.port);
    const app = await apps.create(options());
    const http = app.get(DiscoveryHttpClient);
    for (const origin of [backend.origin, 'http://sockets']) {
      const upgraded = await http.dispatcher.upgrade({
        origin,
        path: '/',
        protocol: 'websocket',
        headers: { 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version': '13' },
      } as Dispatcher.UpgradeOptions);
      expect(upgraded.headers.upgrade).toBe('websocket');
      upgraded.socket.destroy();
      const connected = await http.dispatcher.connect({ origin, path: '127.0.0.1:1' });
      const [chunk] = (await once(connected.socket, 'data')) as [Buffer];
      expect(chunk.toString()).toBe('ws');
      connected.socket.destroy();
      // Open is the handshake through the dispatcher. (Frames are not read here: undici's
      // WebSocket closes 1006 on the first frame inside Jest's VM, a plain Agent's too.)
      const ws = new WebSocket(origin.replace('http', 'ws'), { dispatcher: http.dispatcher });
      await new Promise<void>((resolve, reject) => {
        ws.addEventListener('open', () => resolve());
        ws.addEventListener('error', () => reject(new Error(`WebSocket to ${origin} failed`)));
      });
      ws.close();
    }
  });

  it('5: a failed TLS handshake is "not sent": a POST is retried and the instance ejected', async () => {
    const ports = [await slammer(), await slammer()];
    await register('broken-tls', 'broken-tls-1', ports[0]);
    await register('broken-tls', 'broken-tls-2', ports[1]);
    const app = await apps.create(options({ outlier: { consecutiveFailures: 2 } }));
    const http = app.get(DiscoveryHttpClient);
    const origins = ports.map((p) => `https://127.0.0.1:${p}`);
    const tap = tapHttpAttempts(origins);
    try {
      await expect(
        http.fetch('https://broken-tls/', { method: 'POST', body: 'x' }),
      ).rejects.toThrow();
      expect(tap.attempts).toHaveLength(2); // retried on the other instance
      await expect(
        http.fetch('https://broken-tls/', { method: 'POST', body: 'x' }),
      ).rejects.toThrow();
      // Two failures each: one of them is ejected, every pick goes to the other.
      const picks = new Set([0, 1, 2, 3].map(() => http.choose('broken-tls')?.serviceId));
      expect(picks.size).toBe(1);
    } finally {
      tap.close();
    }
  });

  it('6: the retry budget is per service: a healthy one does not pay for a failing one', async () => {
    const healthy = await startBackend('healthy');
    const failing = [await startBackend('f1'), await startBackend('f2')];
    for (const f of failing) f.status = 503;
    await register('thriving', 'thriving-1', healthy.port);
    await register('failing', 'failing-1', failing[0].port);
    await register('failing', 'failing-2', failing[1].port);
    const app = await apps.create(
      options({
        retry: { budgetPercent: 20, minPerSecond: 0 },
        outlier: { consecutiveFailures: 1000 },
      }),
    );
    const http = app.get(DiscoveryHttpClient);
    for (let i = 0; i < 100; i++) await (await http.fetch('http://thriving/')).text();
    const tap = tapHttpAttempts(failing.map((f) => f.origin));
    try {
      for (let i = 0; i < 10; i++) await (await http.fetch('http://failing/')).text();
      // 20% of its own 10 calls (plus the one the first call may take): at most 3 retries.
      expect(tap.attempts.length - 10).toBeLessThanOrEqual(3);
    } finally {
      tap.close();
    }
  });

  it('8: watches opened for resolved names are released after http.idleWatchMs (watch.services stay)', async () => {
    const backend = await startBackend('idle');
    await register('idle', 'idle-1', backend.port);
    await register('kept', 'kept-1', backend.port);
    const warnings: string[] = [];
    const onWarning = (warning: Error): void => void warnings.push(warning.name);
    process.on('warning', onWarning);
    try {
      const app = await apps.create(
        options(
          { idleWatchMs: 500 },
          {
            watch: { services: ['kept'] },
          },
        ),
      );
      await app.init();
      const http = app.get(DiscoveryHttpClient);
      const registry = app.get(WatchRegistry);
      await (await http.fetch('http://idle/')).text();
      await (await http.fetch('http://kept/')).text();
      // 40 names nobody registered: each rejects (no instance) and leaves its watch behind.
      const names = Array.from({ length: 40 }, (_, i) => `ghost-${i}`);
      await Promise.all(names.map((n) => settle(http.fetch(`http://${n}/`))));
      expect(registry.find('idle')).toBeDefined();
      await waitFor(
        () => registry.find('idle') === undefined && registry.find('ghost-0') === undefined,
        {
          timeoutMs: 3_000,
          message: 'idle watches released',
        },
      );
      expect(registry.find('kept')).toBeDefined();
      // A name used again is watched again.
      expect(await (await http.fetch('http://idle/')).text()).toBe('idle');
      expect(warnings).not.toContain('MaxListenersExceededWarning');
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('9: an attempt timeout rejects with DiscoveryTimeoutError, through fetch and the dispatcher', async () => {
    const backend = await startBackend('late');
    backend.slowMs = 1_000;
    await register('late', 'late-1', backend.port);
    const app = await apps.create(options({ timeouts: { attemptMs: 100 } }));
    const http = app.get(DiscoveryHttpClient);
    await expect(http.fetch('http://late/slow')).rejects.toBeInstanceOf(DiscoveryTimeoutError);
    await expect(
      http.dispatcher.request({ origin: 'http://late', path: '/slow', method: 'GET' }),
    ).rejects.toBeInstanceOf(DiscoveryTimeoutError);
  });

  it('10: once shutdown began, a call by name rejects at once and starts nothing', async () => {
    const app = await apps.create(options());
    await app.init();
    const http = app.get(DiscoveryHttpClient);
    const registry = app.get(WatchRegistry);
    await app.close();
    const started = performance.now();
    await expect(http.fetch('http://latecomer/')).rejects.toBeInstanceOf(DiscoveryError);
    expect(performance.now() - started).toBeLessThan(200);
    expect(registry.find('latecomer')).toBeUndefined();
  });

  it('a name whose watch failed with a transport error and has no set rejects at once', async () => {
    const app = await apps.create({
      ...options(),
      consul: { host: '127.0.0.1', port: await freePort(), timeoutMs: 3_000 },
      retry: { initialDelayMs: 50, maxDelayMs: 100 },
    });
    const http = app.get(DiscoveryHttpClient);
    await expect(http.fetch('http://nowhere/')).rejects.toBeInstanceOf(DiscoveryUnavailableError);
    const started = performance.now();
    await expect(http.fetch('http://nowhere/')).rejects.toBeInstanceOf(DiscoveryUnavailableError);
    expect(performance.now() - started).toBeLessThan(200);
  });

  describe('TLS by service name', () => {
    let ca: TestCa;
    beforeAll(async () => {
      ca = await makeTestCa(await mkdtemp(path.join(tmpdir(), 'http-tls-')));
    });

    /** An https instance with a certificate for `certifiedAs`; records SNI and Host it saw. */
    async function httpsInstance(certifiedAs: string) {
      const { certFile, keyFile } = await issueServerCert(ca, certifiedAs);
      const seen: { sni: unknown; host?: string }[] = [];
      const server = createHttpsServer({
        cert: await readFile(certFile),
        key: await readFile(keyFile),
      });
      server.on('request', (req, res) => {
        seen.push({ sni: (req.socket as TLSSocket).servername, host: req.headers.host });
        res.end(certifiedAs);
      });
      return { port: await listen(server), seen };
    }

    it('https://orders/ verifies the certificate against "orders" (SNI too), Host names the instance', async () => {
      const orders = await httpsInstance('orders');
      await register('orders', 'orders-1', orders.port);
      // The CA as a file path here, as PEM text below.
      const app = await apps.create(options({ tls: { ca: ca.caFile } }));
      const http = app.get(DiscoveryHttpClient);
      expect(await (await http.fetch('https://orders/x')).text()).toBe('orders');
      expect(orders.seen).toEqual([{ sni: 'orders', host: `127.0.0.1:${orders.port}` }]);
    });

    it('a certificate for another name is refused, as a failed handshake: not sent, retried', async () => {
      const impostor = await httpsInstance('billing');
      const genuine = await httpsInstance('payments');
      await register('payments', 'payments-impostor', impostor.port);
      await register('payments', 'payments-genuine', genuine.port);
      const app = await apps.create(options({ tls: { ca: await readFile(ca.caFile, 'utf8') } }));
      const http = app.get(DiscoveryHttpClient);
      for (let i = 0; i < 4; i++) {
        const response = await http.fetch('https://payments/', { method: 'POST', body: 'x' });
        expect(await response.text()).toBe('payments');
      }
      expect(impostor.seen).toEqual([]); // no request ever reached it
    });
  });

  describe("the axios adapter, as axios's own http adapter", () => {
    let seen: string[];
    let server: Server;

    beforeAll(async () => {
      seen = [];
      server = createServer((req, res) => {
        req.resume();
        req.on('end', () => {
          seen.push(`${req.method} ${req.url}`);
          const route = new URL(req.url ?? '/', 'http://x');
          const hops = Number(route.searchParams.get('hops') ?? 0);
          if (route.pathname === '/loop') {
            res.writeHead(302, { location: `/loop?hops=${hops + 1}` }).end();
          } else if (route.pathname === '/start') {
            res.writeHead(302, { location: 'http://axios-target/next' }).end(); // by name again
          } else if (route.pathname === '/next') {
            res.writeHead(301, { location: '/end' }).end(); // relative
          } else if (route.pathname === '/posted') {
            res.writeHead(303, { location: '/end' }).end();
          } else if (route.pathname === '/gzip' || route.pathname === '/br') {
            const json = Buffer.from(JSON.stringify({ compressed: route.pathname }));
            const zipped = route.pathname === '/gzip' ? gzipSync(json) : brotliCompressSync(json);
            res.writeHead(200, {
              'content-type': 'application/json',
              'content-encoding': route.pathname.slice(1),
            });
            res.end(zipped);
          } else if (route.pathname === '/teapot') {
            res.statusMessage = 'Short And Stout';
            res.writeHead(418).end();
          } else {
            res.writeHead(200, { 'content-type': 'text/plain' }).end('x'.repeat(100));
          }
        });
      });
      await register('axios-target', 'axios-target-1', await listen(server));
    });

    async function axiosClient() {
      const app = await apps.create(options());
      return axios.create({ adapter: app.get(DiscoveryHttpClient).axiosAdapter() });
    }

    it('follows redirects (each hop resolved again), a 303 after a POST as a GET; statusText', async () => {
      const client = await axiosClient();
      seen.length = 0;
      const response = await client.get<string>('http://axios-target/start');
      expect([response.status, response.statusText, response.data.length]).toEqual([
        200,
        'OK',
        100,
      ]);
      expect(seen).toEqual(['GET /start', 'GET /next', 'GET /end']);
      seen.length = 0;
      await client.post('http://axios-target/posted', { a: 1 });
      expect(seen).toEqual(['POST /posted', 'GET /end']);
      const teapot = await client.get('http://axios-target/teapot', { validateStatus: () => true });
      expect([teapot.status, teapot.statusText]).toEqual([418, 'Short And Stout']);
    });

    it('maxRedirects bounds the hops (0: the redirect is the answer)', async () => {
      const client = await axiosClient();
      const tooMany = await client
        .get('http://axios-target/loop', { maxRedirects: 3 })
        .catch((e: unknown) => e);
      expect(isAxiosError(tooMany) && tooMany.code).toBe('ERR_FR_TOO_MANY_REDIRECTS');
      const none = await client.get('http://axios-target/loop', {
        maxRedirects: 0,
        validateStatus: () => true,
      });
      expect([none.status, none.headers.location]).toEqual([302, '/loop?hops=1']);
    });

    it('decodes gzip and br bodies (and drops content-encoding); decompress: false keeps them', async () => {
      const client = await axiosClient();
      for (const kind of ['gzip', 'br']) {
        const response = await client.get(`http://axios-target/${kind}`);
        expect(response.data).toEqual({ compressed: `/${kind}` });
        expect(response.headers['content-encoding']).toBeUndefined();
      }
      const raw = await client.get<ArrayBuffer>('http://axios-target/gzip', {
        decompress: false,
        responseType: 'arraybuffer',
      });
      expect(JSON.parse(gunzipSync(Buffer.from(raw.data)).toString())).toEqual({
        compressed: '/gzip',
      });
    });

    it('maxContentLength and maxBodyLength are enforced (the latter before anything is sent)', async () => {
      const client = await axiosClient();
      const large = await client
        .get('http://axios-target/end', { maxContentLength: 10 })
        .catch((e: unknown) => e);
      expect(isAxiosError(large) && large.message).toBe('maxContentLength size of 10 exceeded');
      seen.length = 0;
      const body = await client
        .post('http://axios-target/end', 'abcdefgh', { maxBodyLength: 5 })
        .catch((e: unknown) => e);
      expect(isAxiosError(body) && body.message).toBe(
        'Request body larger than maxBodyLength limit',
      );
      expect(seen).toEqual([]);
    });
  });
});
