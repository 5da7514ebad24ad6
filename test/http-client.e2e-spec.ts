import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Dispatcher } from 'undici';
import { HttpModule, HttpService } from '@nestjs/axios';
import { isAxiosError } from 'axios';
import { firstValueFrom } from 'rxjs';
import {
  DiscoveryHttpClient,
  DiscoveryModule,
  DiscoverySettingsError,
  NoInstanceError,
  type DiscoveryModuleOptions,
} from '../lib/index.js';
import { murmur3 } from '../lib/sharding/murmur3.js';
import {
  delay,
  shardTable,
  startConsulAgent,
  stopAllAgents,
  TestApps,
  waitFor,
  type ConsulAgent,
} from './support/index.js';

// DiscoveryHttpClient against a real agent and real HTTP servers (in this process; the fault
// scenarios with separate processes are for the HTTP reliability suite).

interface Backend {
  id: string;
  server: Server;
  port: number;
  /** Bodies of the requests it received, in order. */
  received: string[];
  /** Answer with this status instead of 200 (e.g. 503). */
  status: number;
}

async function startBackend(id: string): Promise<Backend> {
  const backend: Backend = { id, server: createServer(), port: 0, received: [], status: 200 };
  backend.server.on('request', (req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      backend.received.push(`${req.method} ${req.url} ${Buffer.concat(chunks).toString()}`);
      res.writeHead(backend.status, { 'content-type': 'text/plain' });
      res.end(id);
    });
  });
  await new Promise<void>((resolve) => backend.server.listen(0, '127.0.0.1', resolve));
  backend.port = (backend.server.address() as AddressInfo).port;
  return backend;
}

describe('DiscoveryHttpClient', () => {
  const apps = new TestApps();
  let agent: ConsulAgent;
  const backends: Backend[] = [];

  const options = (extra: Partial<DiscoveryModuleOptions> = {}): DiscoveryModuleOptions => ({
    autoRegister: false,
    consul: { host: '127.0.0.1', port: agent.httpPort, timeoutMs: 2_000 },
    shutdownTimeoutMs: 2_000,
    ...extra,
  });

  async function register(
    name: string,
    backend: Backend,
    meta: Record<string, string> = {},
    id = backend.id,
  ): Promise<void> {
    await agent.api().registerService({
      Name: name,
      ID: id,
      Address: '127.0.0.1',
      Port: backend.port,
      Meta: meta,
      Check: { TTL: '30s', Status: 'passing' },
    });
  }

  beforeAll(async () => {
    agent = await startConsulAgent();
    for (const id of ['echo-1', 'echo-2', 'echo-3']) {
      const backend = await startBackend(id);
      backends.push(backend);
      await register('echo', backend);
    }
  });
  afterEach(async () => {
    await apps.closeAll();
    for (const b of backends) {
      b.status = 200;
      b.received.length = 0;
    }
  });
  afterAll(async () => {
    await Promise.all(backends.map((b) => new Promise((r) => b.server.close(r))));
    await stopAllAgents();
  });

  it('round-robin spreads sequential GETs evenly over the passing instances', async () => {
    const app = await apps.create(options());
    const http = app.get(DiscoveryHttpClient);
    const answers = new Map<string, number>();
    for (let i = 0; i < 300; i++) {
      const response = await http.fetch('http://echo/whoami');
      const who = await response.text();
      answers.set(who, (answers.get(who) ?? 0) + 1);
    }
    expect([...answers.values()].sort()).toEqual([100, 100, 100]);
  });

  it('retries an idempotent request on another instance after a 503, never a POST', async () => {
    const app = await apps.create(options());
    const http = app.get(DiscoveryHttpClient);
    backends[0].status = 503;
    for (let i = 0; i < 30; i++) {
      const response = await http.fetch('http://echo/get');
      expect(response.status).toBe(200);
      expect(await response.text()).not.toBe('echo-1');
    }
    // A fresh client (no ejection yet): round-robin sends one of three POSTs to echo-1, whose
    // 503 reaches the caller — the instance may have acted on it.
    const fresh = (await apps.create(options())).get(DiscoveryHttpClient);
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) {
      const response = await fresh.fetch('http://echo/post', {
        method: 'POST',
        body: `order-${i}`,
      });
      statuses.push(response.status);
    }
    expect(statuses.filter((s) => s === 503)).toHaveLength(1);
    const bodies = backends.flatMap((b) => b.received.filter((r) => r.startsWith('POST')));
    expect(bodies.sort()).toEqual([
      'POST /post order-0',
      'POST /post order-1',
      'POST /post order-2',
    ]);
  });

  it('passes other URLs through untouched and names a service with no instance', async () => {
    const app = await apps.create(options());
    const http = app.get(DiscoveryHttpClient);
    const direct = await http.fetch(`http://127.0.0.1:${backends[1].port}/direct`);
    expect(await direct.text()).toBe('echo-2');
    const error: unknown = await http.fetch('http://nobody/x').then(
      () => undefined,
      (e: unknown) => e,
    );
    // The module's own error, not fetch's TypeError('fetch failed') around it.
    expect(error).toBeInstanceOf(NoInstanceError);
    expect((error as NoInstanceError).service).toBe('nobody');
  });

  it('rejects bad arguments before any I/O, naming them', async () => {
    const app = await apps.create(options());
    const http = app.get(DiscoveryHttpClient);
    for (const [call, path] of [
      [() => http.fetch('not a url'), 'url'],
      [() => http.fetch('ftp://echo/x'), 'url'],
      [() => http.fetch('http://echo/x', { deadlineMs: -5 }), 'deadlineMs'],
      [() => http.fetch('http://echo/x', { shardKey: 7 as unknown as string }), 'shardKey'],
      [() => Promise.resolve().then(() => http.choose('not a name')), 'name'],
      [
        () =>
          Promise.resolve().then(() => http.choose('echo', { shardKey: 7 as unknown as string })),
        'shardKey',
      ],
    ] as const) {
      const error: unknown = await call().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(DiscoverySettingsError);
      expect((error as DiscoverySettingsError).paths).toEqual([path]);
    }
    expect(backends.every((b) => b.received.length === 0)).toBe(true);
  });

  it('an unknown strategy is a settings error naming http.strategy', async () => {
    const error: unknown = await apps
      .create(options({ http: { strategy: 'fastest' as 'random' } }))
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(DiscoverySettingsError);
    expect((error as DiscoverySettingsError).paths).toEqual(['http.strategy']);
  });

  it('shardKey reaches the owner of the key’s partition in the target’s published table', async () => {
    const shard = { shardPartitions: '16', shardBalance: '1', shardWeight: '1' };
    // The same servers as a second, sharded service (they answer with their echo-N name).
    for (const b of backends) await register('sharded', b, shard, `sharded-${b.id}`);
    const app = await apps.create(options());
    const http = app.get(DiscoveryHttpClient);
    const table = shardTable(
      backends.map((b) => `sharded-${b.id}`),
      16,
    );
    for (const key of ['order-1', 'order-2', 'customer-77', 'zürich', '']) {
      const owner = table.ownerOf(murmur3(key) % 16);
      const response = await http.fetch('http://sharded/by-key', { shardKey: key });
      expect(`sharded-${await response.text()}`).toBe(owner);
      expect(http.choose('sharded', { shardKey: key })?.serviceId).toBe(owner);
    }
    // A target that publishes no table cannot be routed by key.
    const error: unknown = await http.fetch('http://echo/x', { shardKey: 'k' }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(DiscoverySettingsError);
    expect((error as DiscoverySettingsError).paths).toEqual(['shardKey']);
  });

  it('choose() picks from memory; a name not watched yet starts its watch and gives undefined', async () => {
    const app = await apps.create(options());
    const http = app.get(DiscoveryHttpClient);
    expect(http.choose('echo')).toBeUndefined();
    const picked = await waitFor(() => http.choose('echo')?.serviceId, {
      timeoutMs: 5_000,
      intervalMs: 10,
      message: 'choose() answers once the watch has its first set',
    });
    expect(['echo-1', 'echo-2', 'echo-3']).toContain(picked);
  });

  it('@nestjs/axios HttpService with the adapter: balanced, retried, statuses and errors as axios', async () => {
    const app = await apps.compile({
      imports: [
        DiscoveryModule.forRoot({ ...options(), isGlobal: true }),
        HttpModule.registerAsync({
          inject: [DiscoveryHttpClient],
          useFactory: (client: DiscoveryHttpClient) => ({ adapter: client.axiosAdapter() }),
        }),
      ],
    });
    await app.init();
    const http = app.get(HttpService);
    backends[2].status = 503;
    const answers: string[] = [];
    for (let i = 0; i < 30; i++) {
      const response = await firstValueFrom(
        http.get<string>('http://echo/whoami', { params: { n: i }, responseType: 'text' }),
      );
      expect(response.status).toBe(200);
      answers.push(response.data);
    }
    // echo-3's 503 is retried elsewhere, then it is ejected: the caller only sees 200s.
    expect(new Set(answers)).toEqual(new Set(['echo-1', 'echo-2']));
    expect(backends[0].received[0]).toBe('GET /whoami?n=0 ');
    const posted = await firstValueFrom(http.post('http://echo/orders', { id: 7 }));
    expect(posted.status).toBe(200);
    const sent = backends.flatMap((b) => b.received.filter((r) => r.startsWith('POST')));
    expect(sent).toEqual(['POST /orders {"id":7}']);
    // A refused status rejects as axios does, with the response; no instance → an AxiosError
    // whose cause is NoInstanceError.
    backends[0].status = 404;
    backends[1].status = 404;
    const refused: unknown = await firstValueFrom(http.get('http://echo/missing')).catch(
      (e: unknown) => e,
    );
    expect(isAxiosError(refused) && refused.response?.status).toBe(404);
    const none: unknown = await firstValueFrom(http.get('http://nobody/x')).catch(
      (e: unknown) => e,
    );
    expect(isAxiosError(none) && none.cause).toBeInstanceOf(NoInstanceError);
  });

  it('plain fetch(url, { dispatcher }) resolves and balances through the dispatcher', async () => {
    const app = await apps.create(options());
    const { dispatcher } = app.get(DiscoveryHttpClient);
    const answers = new Map<string, number>();
    for (let i = 0; i < 30; i++) {
      const response = await fetch('http://echo/whoami', {
        dispatcher,
      } as RequestInit & { dispatcher: unknown });
      const who = await response.text();
      answers.set(who, (answers.get(who) ?? 0) + 1);
    }
    expect([...answers.values()]).toEqual([10, 10, 10]);
  });

  it('back-pressure reaches the instance, also under an interceptor of undici’s newer handler API', async () => {
    // 64 MiB, more than loopback's socket buffers hold: a client that stops reading holds the
    // server's writes until it reads again.
    const SIZE = 64 * 1024 * 1024;
    const finished: number[] = [];
    const big = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const chunk = Buffer.alloc(1024 * 1024, 1);
      let left = SIZE / chunk.length;
      const write = (): void => {
        while (left > 0) {
          left--;
          if (!res.write(chunk)) return void res.once('drain', write);
        }
        res.end(() => finished.push(Date.now()));
      };
      write();
    });
    await new Promise<void>((resolve) => big.listen(0, '127.0.0.1', resolve));
    try {
      await agent.api().registerService({
        Name: 'big',
        ID: 'big-1',
        Address: '127.0.0.1',
        Port: (big.address() as AddressInfo).port,
        Check: { TTL: '30s', Status: 'passing' },
      });
      const app = await apps.create(options());
      const { dispatcher } = app.get(DiscoveryHttpClient);
      const statuses: number[] = [];
      // Forwards each call as is, noting the status: its handler has only the newer methods.
      const noting: Dispatcher.DispatcherComposeInterceptor = (dispatch) => (opts, handler) =>
        dispatch(opts, {
          onRequestStart: (c, ctx) => handler.onRequestStart?.(c, ctx),
          onResponseStart: (c, status, headers, message) => {
            statuses.push(status);
            handler.onResponseStart?.(c, status, headers, message);
          },
          onResponseData: (c, chunk) => handler.onResponseData?.(c, chunk),
          onResponseEnd: (c, trailers) => handler.onResponseEnd?.(c, trailers),
          onResponseError: (c, error) => handler.onResponseError?.(c, error),
        });
      for (const via of [dispatcher, dispatcher.compose(noting)]) {
        finished.length = 0;
        const { statusCode, body } = await via.request({
          origin: 'http://big',
          path: '/big',
          method: 'GET',
        });
        expect(statusCode).toBe(200);
        await delay(500); // not reading: the server must stay blocked meanwhile
        expect(finished).toEqual([]);
        let length = 0;
        for await (const chunk of body) length += (chunk as Buffer).length;
        expect(length).toBe(SIZE);
        await waitFor(() => finished.length === 1, {
          timeoutMs: 5_000,
          message: 'the server finished',
        });
      }
      expect(statuses).toEqual([200]);
    } finally {
      await agent.api().deregisterService('big-1');
      await new Promise((resolve) => big.close(resolve));
    }
  });
});
