import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { freePorts } from './ports.harness.js';

// What a dev agent (consul-agent.harness) and a cluster node (consul-cluster.harness) have in
// common: their ports and the addresses they make, the capped log of what they print, and a
// spawn that a dying test process can't leak.

/** Bytes of agent output kept: the log is cut back to this once it grows past twice as much. */
export const AGENT_LOG_CAP = 1 << 20;

export interface AgentPorts {
  http: number;
  server: number;
  serfLan: number;
  https?: number;
}

/** Ports free on `bind` a moment ago, all different (racy by nature: see freePort). */
export async function pickAgentPorts(bind: string, https = false): Promise<AgentPorts> {
  const [http, server, serfLan, httpsPort] = await freePorts(https ? 4 : 3, bind);
  return { http, server, serfLan, https: httpsPort };
}

/** One Consul agent process: its bind IP, ports and addresses, and what it printed. */
export abstract class AgentProcessBase {
  private log = '';

  constructor(
    readonly bind: string,
    protected readonly ports: AgentPorts,
  ) {}

  get httpPort(): number {
    return this.ports.http;
  }
  get serverPort(): number {
    return this.ports.server;
  }
  get serfLanPort(): number {
    return this.ports.serfLan;
  }
  /** 'IP:PORT' of the HTTP API, the CONSUL_HTTP_ADDR form. */
  get httpAddr(): string {
    return `${this.bind}:${this.ports.http}`;
  }
  /** 'http://IP:PORT' */
  get baseUrl(): string {
    return `http://${this.httpAddr}`;
  }
  /** 'IP:SERVER_PORT', the form /v1/status/leader answers with. */
  get serverAddr(): string {
    return `${this.bind}:${this.ports.server}`;
  }

  /** Everything the agent printed, across restarts (last ~1 MB). */
  logs(): string {
    return this.log;
  }

  protected appendLog(text: string): void {
    this.log += text;
    if (this.log.length > AGENT_LOG_CAP * 2) this.log = this.log.slice(-AGENT_LOG_CAP);
  }
}

export interface SpawnedAgent {
  readonly child: ChildProcess;
  /** Resolves once the process has closed (its output read to the end) or failed to spawn. */
  readonly closed: Promise<void>;
  /** Why the spawn failed, if it did. */
  readonly spawnError: Error | undefined;
}

/**
 * Spawns `bin args`, passing its stdout and stderr text to `onOutput`. Neither the process nor
 * its pipes keep Jest's worker alive: a forgotten agent is reaped by its watchdog instead.
 */
export function spawnAgentProcess(
  bin: string,
  args: string[],
  onOutput: (text: string) => void,
): SpawnedAgent {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const onData = (chunk: Buffer): void => onOutput(chunk.toString('utf8'));
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  let spawnError: Error | undefined;
  // 'close' (not 'exit'): the last log lines, such as "address already in use", are read by then.
  const closed = new Promise<void>((resolve) => {
    child.once('close', () => resolve());
    child.on('error', (error) => {
      spawnError ??= error;
      resolve();
    });
  });
  const watchdog = spawnWatchdog(child);
  void closed.then(() => watchdog?.kill('SIGKILL'));
  child.unref();
  for (const stream of [child.stdout, child.stderr]) (stream as net.Socket | null)?.unref();
  return {
    child,
    closed,
    get spawnError() {
      return spawnError;
    },
  };
}

/**
 * A `sh` that SIGKILLs `child` when its stdin pipe from us closes, i.e. when this process dies
 * in any way (a Jest worker killed after a timeout runs no exit handlers).
 */
function spawnWatchdog(child: ChildProcess): ChildProcess | undefined {
  if (child.pid === undefined) return undefined;
  const watchdog = spawn(
    'sh',
    ['-c', 'read _; kill -9 "$1" 2>/dev/null', 'consul-watchdog', String(child.pid)],
    { stdio: ['pipe', 'ignore', 'ignore'] },
  );
  watchdog.on('error', () => undefined); // best effort
  watchdog.unref();
  (watchdog.stdin as net.Socket | null)?.unref();
  return watchdog;
}

/** The last `lines` lines of an agent's log. */
export function logTail(log: string, lines = 40): string {
  return log.trimEnd().split('\n').slice(-lines).join('\n');
}

/**
 * Adds a Jest afterAll hook when this runs inside Jest (read from globalThis: the benchmark and
 * the demo run this code under plain node, without Jest's globals or their types).
 */
export function registerAfterAll(hook: () => Promise<void>): void {
  const afterAll = (globalThis as { afterAll?: (fn: () => Promise<void>) => void }).afterAll;
  try {
    if (typeof afterAll === 'function') afterAll(hook);
  } catch {
    // Imported from inside a running test (dynamic import): hooks can't be added there.
  }
}
