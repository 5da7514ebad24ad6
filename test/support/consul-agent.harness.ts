import { execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { consulApi, type ConsulApi } from './consul-api.harness.js';
import {
  AGENT_LOG_CAP,
  AgentProcessBase,
  logTail,
  pickAgentPorts,
  registerAfterAll,
  spawnAgentProcess,
  type AgentPorts,
} from './consul-process.harness.js';
import { delay, waitFor } from './wait-for.harness.js';

export interface ConsulAgentOptions {
  /** ACL enabled, default policy deny, this master token (1.8 key `acl.tokens.master`). */
  acl?: { masterToken: string };
  /** Adds an HTTPS port next to the plain HTTP one. */
  tls?: { caFile: string; certFile: string; keyFile: string; verifyIncoming?: boolean };
  extraArgs?: string[];
  /** Loopback IP for bind and client addresses; default 127.0.0.1. */
  bind?: string;
  /** Bound on "has a leader and its node in the catalog"; default 15 s. */
  readyTimeoutMs?: number;
}

export interface ConsulAgent {
  readonly bin: string;
  readonly bind: string;
  readonly httpPort: number;
  /** 'IP:PORT', the CONSUL_HTTP_ADDR form. */
  readonly httpAddr: string;
  /** 'http://IP:PORT' */
  readonly baseUrl: string;
  readonly httpsPort?: number;
  readonly httpsAddr?: string;
  readonly httpsBaseUrl?: string;
  readonly serverPort: number;
  readonly serfLanPort: number;
  readonly masterToken?: string;
  /** Pid of the running agent process, undefined while stopped. */
  readonly pid: number | undefined;
  /** Raw API on this agent; the token defaults to the ACL master token, if any. */
  api(token?: string): ConsulApi;
  /** Starts again on the same ports after stop()/kill(); no-op while running. */
  start(): Promise<void>;
  /** SIGTERM, SIGKILL after 2 s; resolves once the process has exited. */
  stop(): Promise<void>;
  /** SIGKILL; resolves once the process has exited. */
  kill(): Promise<void>;
  /** kill() then start() on the same ports (a dev agent comes back empty). */
  restart(): Promise<void>;
  /** Everything the agent printed, across restarts (last ~1 MB). */
  logs(): string;
  /** The running agent's version, e.g. '1.8.7'. */
  version(): Promise<string>;
}

const STOP_GRACE_MS = 2_000;
const FRESH_PORT_ATTEMPTS = 5;
const SAME_PORT_RETRY_MS = 10_000;

let cachedBin: string | undefined;

/**
 * The repository root: the nearest folder above this file with a package.json (this file also
 * runs compiled, from .tmp/, for the benchmark and the demo).
 */
export function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('no package.json above test/support');
    dir = parent;
  }
  return dir;
}

/** Path of the Consul binary from scripts/consul.sh (which honours CONSUL_BIN); run once. */
export function consulBinary(): string {
  if (cachedBin === undefined) {
    const script = path.join(repoRoot(), 'scripts', 'consul.sh');
    try {
      cachedBin = execFileSync('bash', [script], { encoding: 'utf8', stdio: 'pipe' }).trim();
    } catch (error) {
      const stderr = (error as { stderr?: string }).stderr ?? '';
      throw new Error(`scripts/consul.sh found no Consul binary:\n${stderr}`, { cause: error });
    }
  }
  return cachedBin;
}

const agents = new Set<ConsulAgentProcess>();
const processes = new Set<ChildProcess>();

/** Kills every agent started through this module (dev agents keep nothing worth a graceful stop). */
export async function stopAllAgents(): Promise<void> {
  await Promise.all([...agents].map((agent) => agent.kill()));
}

// Last resort outside Jest. Inside Jest `process` is a sandbox copy whose 'exit' never fires,
// which is why every agent also gets a watchdog (see spawnWatchdog) and afterAll below.
process.on('exit', () => {
  for (const child of processes) child.kill('SIGKILL');
});
registerAfterAll(stopAllAgents);

export async function startConsulAgent(options: ConsulAgentOptions = {}): Promise<ConsulAgent> {
  const bin = consulBinary();
  const bind = options.bind ?? '127.0.0.1';
  let lastError: unknown;
  for (let attempt = 1; attempt <= FRESH_PORT_ATTEMPTS; attempt++) {
    const agent = new ConsulAgentProcess(
      bin,
      bind,
      await pickAgentPorts(bind, !!options.tls),
      options,
    );
    agents.add(agent); // before launch: stopAllAgents must also reach an agent still starting
    try {
      await agent.launch();
      return agent;
    } catch (error) {
      agents.delete(agent);
      // Another process took a port between freePort() and the agent's bind: new ports.
      if (!(error instanceof AddressInUseError)) throw error;
      lastError = error;
    }
  }
  throw new Error(`Consul agent: ports kept clashing after ${FRESH_PORT_ATTEMPTS} attempts`, {
    cause: lastError,
  });
}

class AddressInUseError extends Error {}

interface Run {
  child: ChildProcess;
  closed: Promise<void>;
}

class ConsulAgentProcess extends AgentProcessBase implements ConsulAgent {
  private run: Run | undefined;

  constructor(
    readonly bin: string,
    bind: string,
    ports: AgentPorts,
    private readonly options: ConsulAgentOptions,
  ) {
    super(bind, ports);
  }

  get httpsPort(): number | undefined {
    return this.ports.https;
  }
  get httpsAddr(): string | undefined {
    return this.ports.https === undefined ? undefined : `${this.bind}:${this.ports.https}`;
  }
  get httpsBaseUrl(): string | undefined {
    return this.httpsAddr === undefined ? undefined : `https://${this.httpsAddr}`;
  }
  get masterToken(): string | undefined {
    return this.options.acl?.masterToken;
  }
  get pid(): number | undefined {
    return this.run?.child.pid;
  }

  api(token = this.masterToken): ConsulApi {
    return consulApi(this.baseUrl, token);
  }

  async version(): Promise<string> {
    const self = (await this.api().request('GET', '/v1/agent/self')).json as {
      Config?: { Version?: string };
    };
    return self?.Config?.Version ?? 'unknown';
  }

  async start(): Promise<void> {
    if (this.run) return;
    // The old process's ports are usually free at once, but not always: retry.
    const deadline = Date.now() + SAME_PORT_RETRY_MS;
    for (let wait = 50; ; wait = Math.min(wait * 2, 500)) {
      try {
        await this.launch();
        return;
      } catch (error) {
        if (!(error instanceof AddressInUseError) || Date.now() + wait > deadline) throw error;
        await delay(wait);
      }
    }
  }

  stop(): Promise<void> {
    return this.terminate('SIGTERM');
  }

  kill(): Promise<void> {
    return this.terminate('SIGKILL');
  }

  async restart(): Promise<void> {
    await this.kill();
    await this.start();
  }

  /** One spawn; resolves when ready, else kills what it spawned and rejects. */
  async launch(): Promise<void> {
    let launchLog = '';
    const spawned = spawnAgentProcess(this.bin, this.args(), (text) => {
      // Only the start-up lines matter here (ready or 'address already in use').
      if (launchLog.length < AGENT_LOG_CAP) launchLog += text;
      this.appendLog(text);
    });
    const { child, closed } = spawned;
    processes.add(child);
    this.run = { child, closed }; // set now, so stop()/kill() also reach an agent still starting
    void closed.then(() => {
      processes.delete(child);
      if (this.run?.child === child) this.run = undefined; // died on its own
    });

    const exitedEarly = new AbortController();
    void closed.then(() => exitedEarly.abort(new Error('agent exited')));
    const readyTimeoutMs = this.options.readyTimeoutMs ?? 15_000;
    try {
      await waitFor(() => this.probeReady(), {
        timeoutMs: readyTimeoutMs,
        message: `Consul agent on ${this.httpAddr} has no leader and node yet`,
        signal: exitedEarly.signal,
      });
    } catch (error) {
      if (exitedEarly.signal.aborted) {
        if (/address already in use/i.test(launchLog)) {
          throw new AddressInUseError(
            `Consul agent: address already in use\n${logTail(launchLog)}`,
            {
              cause: error,
            },
          );
        }
        const { spawnError } = spawned;
        const how = spawnError
          ? `failed to spawn ${this.bin}: ${spawnError.message}`
          : `exited at start (code ${child.exitCode}, signal ${child.signalCode})`;
        throw new Error(
          `Consul agent on ${this.httpAddr} ${how}\n--- agent log tail ---\n${logTail(launchLog)}`,
          { cause: error },
        );
      }
      child.kill('SIGKILL');
      await closed;
      throw new Error(
        `Consul agent not ready within ${readyTimeoutMs} ms: ${(error as Error).message}\n` +
          `--- agent log tail ---\n${logTail(launchLog)}`,
        { cause: error },
      );
    }
  }

  private args(): string[] {
    const { acl, tls, extraArgs = [] } = this.options;
    const hcl: string[] = [];
    if (acl) {
      const token = JSON.stringify(acl.masterToken);
      // tokens.agent too, else the agent's own node sync logs "blocked by ACLs" forever.
      hcl.push(
        `acl { enabled = true  default_policy = "deny"  tokens { master = ${token}  agent = ${token} } }`,
      );
    }
    if (tls) {
      hcl.push(
        `ports { https = ${this.ports.https} }`,
        `ca_file = ${JSON.stringify(tls.caFile)}`,
        `cert_file = ${JSON.stringify(tls.certFile)}`,
        `key_file = ${JSON.stringify(tls.keyFile)}`,
        `verify_incoming = ${tls.verifyIncoming ? 'true' : 'false'}`,
      );
    }
    return [
      'agent', '-dev', '-bind', this.bind, '-client', this.bind,
      '-http-port', String(this.ports.http), '-dns-port', '-1', '-grpc-port', '-1',
      '-server-port', String(this.ports.server), '-serf-lan-port', String(this.ports.serfLan),
      '-serf-wan-port', '-1',
      ...hcl.flatMap((fragment) => ['-hcl', fragment]),
      ...extraArgs,
    ]; // prettier-ignore
  }

  private async probeReady(): Promise<boolean> {
    const headers: Record<string, string> = {};
    if (this.masterToken) headers['X-Consul-Token'] = this.masterToken;
    const get = async (path: string): Promise<unknown> => {
      const res = await fetch(`${this.baseUrl}${path}`, {
        headers,
        signal: AbortSignal.timeout(2_000),
      });
      return res.json();
    };
    if ((await get('/v1/status/leader')) !== this.serverAddr) return false;
    // With ACLs this list is filtered until the master token exists, so it also proves that.
    const nodes = await get('/v1/catalog/nodes');
    if (!Array.isArray(nodes) || nodes.length === 0) return false;
    if (this.ports.https !== undefined) await tcpConnect(this.bind, this.ports.https);
    return true;
  }

  private async terminate(signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
    const run = this.run;
    if (!run) return;
    if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill(signal);
    const escalate =
      signal === 'SIGTERM' ? setTimeout(() => run.child.kill('SIGKILL'), STOP_GRACE_MS) : undefined;
    await run.closed;
    clearTimeout(escalate);
    if (this.run === run) this.run = undefined;
  }
}

function tcpConnect(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    socket.setTimeout(2_000, () => socket.destroy(new Error(`connect ${host}:${port} timed out`)));
    socket.once('connect', () => {
      socket.destroy();
      resolve();
    });
    socket.once('error', reject);
  });
}
