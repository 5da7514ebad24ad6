import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startChildApp, type ChildApp } from './child-app.harness.js';
import type { ConsulAgent } from './consul-agent.harness.js';
import { freePort } from './ports.harness.js';
import { waitFor } from './wait-for.harness.js';

// HTTP child apps (test/support/fixtures/child-app.mjs with CHILD_APP_HTTP): real servers in
// their own processes, each registered through DiscoveryModule with a TTL check on its loopback
// address and listening port, for the HTTP client's fault scenarios (SIGKILL, SIGSTOP, SIGTERM).

export interface HttpChildrenSettings {
  agent: ConsulAgent;
  service: string;
  count: number;
  /** Each child's TTL; default '30s', so Consul notices no fault within a scenario's window. */
  ttl?: string;
  /** `sharding` of the children's DiscoveryModuleOptions (README "Sharding"). */
  sharding?: object;
  /** Hard cap on each child's life (default 120 s). */
  maxLifeMs?: number;
  /** Bound on "every child listens and is passing in Consul" (default 30 s). */
  readyTimeoutMs?: number;
  /**
   * Each child registers only once its server listens (`autoRegister: false`, then
   * `registerSelf()` after `listen()`, README "Registration and listen()"); by default it
   * registers in `init()`, before it listens, as `autoRegister` does.
   */
  registerAfterListen?: boolean;
}

export interface HttpChild {
  readonly serviceId: string;
  readonly port: number;
  /** 'http://127.0.0.1:PORT', also how undici names the origin of an attempt. */
  readonly origin: string;
  readonly app: ChildApp;
  /** The POST bodies it logged, in order (read from its file: also after a SIGKILL). */
  posted(): unknown[];
  /** Its answer delays (fixture `PUT /delays`). */
  setDelays(delays: { whoamiMs?: number; postMs?: number }): Promise<void>;
  /** `GET /owns?key=` straight to this child. */
  owns(key: string): Promise<{ serviceId: string; partition: number; owns: boolean }>;
  kill(signal: NodeJS.Signals): void;
  /** SIGSTOP: hung, not dead (the kernel still accepts its connections). */
  stop(): void;
  /** SIGCONT */
  resume(): void;
}

export interface HttpChildren {
  readonly service: string;
  readonly children: readonly HttpChild[];
  /**
   * SIGTERMs `children[index]` (it deregisters and drains), waits for its exit, then starts it
   * again with the same serviceId on a new port; resolves once Consul holds the new one passing.
   * The new child takes its place in `children`.
   */
  restart(index: number): Promise<HttpChild>;
  /** SIGKILLs the children still running (a stopped one too) and removes their logs. */
  close(): Promise<void>;
}

/** A few tries: a port free a moment ago may be taken before the child binds it. */
const PORT_ATTEMPTS = 3;

/** Starts `count` HTTP children on free ports; resolves once each listens and is passing. */
export async function startHttpChildren(s: HttpChildrenSettings): Promise<HttpChildren> {
  const dir = mkdtempSync(path.join(os.tmpdir(), `${s.service}-`));
  const readyTimeoutMs = s.readyTimeoutMs ?? 30_000;
  const children: HttpChild[] = [];
  const close = async (): Promise<void> => {
    await Promise.all(
      children.map(async (c) => {
        const { process: child } = c.app;
        if (child.exitCode !== null || child.signalCode !== null) return;
        c.kill('SIGKILL');
        await c.app.exited;
      }),
    );
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const started = await Promise.all(
      Array.from({ length: s.count }, (_, i) =>
        startHttpChild(s, `${s.service}-${i}`, path.join(dir, `${s.service}-${i}.log`), (c) =>
          children.push(c),
        ),
      ),
    );
    await waitForPassing(s, started, readyTimeoutMs);
    const restart = async (index: number): Promise<HttpChild> => {
      const old = started[index];
      old.kill('SIGTERM');
      await old.app.exited;
      const logFile = path.join(dir, `${old.serviceId}-${Date.now()}.log`);
      const child = await startHttpChild(s, old.serviceId, logFile, (c) => children.push(c));
      await waitForPassing(s, [child], readyTimeoutMs);
      started[index] = child;
      return child;
    };
    return { service: s.service, children: started, restart, close };
  } catch (error) {
    await close();
    throw error;
  }
}

/** Until Consul holds each of `children` passing, on its own port. */
async function waitForPassing(
  s: HttpChildrenSettings,
  children: readonly HttpChild[],
  timeoutMs: number,
): Promise<void> {
  await waitFor(
    async () => {
      const passing = await s.agent.api().healthService(s.service, { passing: true });
      return children.every((c) =>
        passing.some((e) => e.Service.ID === c.serviceId && e.Service.Port === c.port),
      );
    },
    { timeoutMs, message: `every ${s.service} child passing in Consul` },
  );
}

async function startHttpChild(
  s: HttpChildrenSettings,
  serviceId: string,
  logFile: string,
  track: (child: HttpChild) => void,
): Promise<HttpChild> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const app = startChildApp({
      options: {
        consul: { host: s.agent.bind, port: s.agent.httpPort, timeoutMs: 2_000 },
        service: { name: s.service, id: serviceId, address: '127.0.0.1', port },
        healthCheck: { ttl: s.ttl ?? '30s', deregisterCriticalServiceAfter: '1m' },
        retry: { maxAttempts: 3, initialDelayMs: 50, maxDelayMs: 500 },
        shutdownTimeoutMs: 5_000,
        ...(s.sharding ? { sharding: s.sharding } : {}),
        ...(s.registerAfterListen ? { autoRegister: false } : {}),
      },
      maxLifeMs: s.maxLifeMs ?? 120_000,
      http: { logFile, registerAfterListen: s.registerAfterListen },
    });
    const child = httpChild(serviceId, port, logFile, app);
    track(child);
    try {
      await app.next('listening', s.readyTimeoutMs ?? 30_000);
      return child;
    } catch (error) {
      if (attempt >= PORT_ATTEMPTS || !app.output().includes('EADDRINUSE')) throw error;
    }
  }
}

function httpChild(serviceId: string, port: number, logFile: string, app: ChildApp): HttpChild {
  const origin = `http://127.0.0.1:${port}`;
  const call = async (method: string, route: string, body?: unknown): Promise<unknown> => {
    const response = await fetch(`${origin}${route}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(5_000),
    });
    if (!response.ok) throw new Error(`${method} ${origin}${route} answered ${response.status}`);
    return response.json();
  };
  return {
    serviceId,
    port,
    origin,
    app,
    posted: () => {
      let text = '';
      try {
        text = readFileSync(logFile, 'utf8');
      } catch {
        // Nothing logged yet: no file.
      }
      return text
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as unknown);
    },
    setDelays: async (delays) => {
      await call('PUT', '/delays', delays);
    },
    owns: async (key) =>
      (await call('GET', `/owns?key=${encodeURIComponent(key)}`)) as {
        serviceId: string;
        partition: number;
        owns: boolean;
      },
    kill: (signal) => app.kill(signal),
    stop: () => app.kill('SIGSTOP'),
    resume: () => app.kill('SIGCONT'),
  };
}
