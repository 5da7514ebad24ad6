import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { consulBinary } from './consul-agent.harness.js';
import { consulApi, type ConsulApi } from './consul-api.harness.js';
import {
  AgentProcessBase,
  logTail,
  pickAgentPorts,
  registerAfterAll,
  spawnAgentProcess,
  type AgentPorts,
} from './consul-process.harness.js';
import { waitFor } from './wait-for.harness.js';

// A real multi-node Consul cluster on one machine: N servers and one client agent (or more),
// each on its own loopback IP (127.0.0.2, .3, … by default) and its own free ports, persistent
// data dirs in a temp dir (not -dev), `-bootstrap-expect N`, `-retry-join` every server, and
// `raft_multiplier = 1` (leader in ≈1.5 s, re-election after a SIGKILL in ≈3–3.5 s).

export interface ConsulClusterOptions {
  /** One server per IP; default 127.0.0.2, 127.0.0.3, 127.0.0.4. */
  serverBinds?: string[];
  /** The client agent's IP; default 127.0.0.5. */
  clientBind?: string;
  /** More client agents (client-2, …), one per IP, e.g. ['127.0.0.6']; default none. */
  extraClientBinds?: string[];
  /** Bound on "leader elected and every node in the catalog"; default 60 s. */
  readyTimeoutMs?: number;
}

export interface ClusterNode {
  readonly name: string;
  readonly bind: string;
  readonly server: boolean;
  readonly httpPort: number;
  readonly serverPort: number;
  readonly serfLanPort: number;
  /** 'IP:PORT' of the HTTP API. */
  readonly httpAddr: string;
  readonly baseUrl: string;
  /** 'IP:SERVER_PORT', the form /v1/status/leader answers with. */
  readonly serverAddr: string;
  /** Pid while running, undefined once exited. */
  readonly pid: number | undefined;
  readonly running: boolean;
  api(token?: string): ConsulApi;
  /** SIGKILL; resolves once the process has exited. */
  kill(): Promise<void>;
  logs(): string;
}

export interface ConsulCluster {
  readonly servers: readonly ClusterNode[];
  readonly client: ClusterNode;
  /** `client` first, then one per `extraClientBinds`. */
  readonly clients: readonly ClusterNode[];
  readonly nodes: readonly ClusterNode[];
  readonly dataDir: string;
  /** The server the running servers agree is leader; undefined when there is none (yet). */
  leader(): Promise<ClusterNode | undefined>;
  /** SIGKILLs every node and removes the data dir. Idempotent. */
  stop(): Promise<void>;
}

const clusters = new Set<ClusterHandle>();
const START_ATTEMPTS = 3;

/** Stops every cluster started through this module. */
export async function stopAllClusters(): Promise<void> {
  await Promise.all([...clusters].map((cluster) => cluster.stop()));
}

registerAfterAll(stopAllClusters);

export async function startConsulCluster(
  options: ConsulClusterOptions = {},
): Promise<ConsulCluster> {
  let lastError: unknown;
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    const cluster = new ClusterHandle(await mkdtemp(path.join(os.tmpdir(), 'athomic-cluster-')));
    clusters.add(cluster);
    try {
      await cluster.launch(options);
      return cluster;
    } catch (error) {
      await cluster.stop();
      // A port taken between freePort() and the agent's bind: try again with new ports.
      if (!/address already in use/i.test(String((error as Error).message))) throw error;
      lastError = error;
    }
  }
  throw new Error(`Consul cluster: ports kept clashing after ${START_ATTEMPTS} attempts`, {
    cause: lastError,
  });
}

class ClusterHandle implements ConsulCluster {
  servers: NodeProcess[] = [];
  client!: NodeProcess;
  clients: NodeProcess[] = [];
  private stopped?: Promise<void>;

  constructor(readonly dataDir: string) {}

  get nodes(): readonly ClusterNode[] {
    return [...this.servers, ...this.clients];
  }

  async launch(options: ConsulClusterOptions): Promise<void> {
    const serverBinds = options.serverBinds ?? ['127.0.0.2', '127.0.0.3', '127.0.0.4'];
    const clientBind = options.clientBind ?? '127.0.0.5';
    this.servers = await Promise.all(
      serverBinds.map(
        async (bind, i) =>
          new NodeProcess(`server-${i + 1}`, bind, true, await pickAgentPorts(bind)),
      ),
    );
    this.client = new NodeProcess('client-1', clientBind, false, await pickAgentPorts(clientBind));
    this.clients = [this.client];
    for (const [i, bind] of (options.extraClientBinds ?? []).entries()) {
      this.clients.push(
        new NodeProcess(`client-${i + 2}`, bind, false, await pickAgentPorts(bind)),
      );
    }
    const joins = (others: NodeProcess[]): string[] =>
      others.flatMap((s) => ['-retry-join', `${s.bind}:${s.serfLanPort}`]);
    for (const server of this.servers) {
      server.spawn(this.dataDir, [
        '-server', '-bootstrap-expect', String(this.servers.length),
        ...joins(this.servers.filter((s) => s !== server)),
        '-hcl', 'performance { raft_multiplier = 1 }',
      ]); // prettier-ignore
    }
    for (const client of this.clients) client.spawn(this.dataDir, joins(this.servers));

    const readyTimeoutMs = options.readyTimeoutMs ?? 60_000;
    const everyNode = this.nodes.map((n) => n.name).sort();
    // A node that exits while we wait (e.g. "address already in use") ends the wait at once.
    const exitedEarly = new AbortController();
    for (const node of [...this.servers, ...this.clients]) {
      void node.whenExited.then(() =>
        exitedEarly.abort(new Error(`${node.name} exited at start\n${logTail(node.logs())}`)),
      );
    }
    try {
      await waitFor(
        async () => {
          const leader = await this.leader();
          if (!leader) return false;
          const nodes = (await this.client.api().request('GET', '/v1/catalog/nodes')).json;
          if (!Array.isArray(nodes)) return false;
          const names = (nodes as { Node: string }[]).map((n) => n.Node).sort();
          return JSON.stringify(names) === JSON.stringify(everyNode);
        },
        {
          timeoutMs: readyTimeoutMs,
          intervalMs: 100,
          message: `Consul cluster (${everyNode.join(', ')}) has no leader or not every node yet`,
          signal: exitedEarly.signal,
        },
      );
    } catch (error) {
      const logs = this.nodes.map((n) => `--- ${n.name} ---\n${logTail(n.logs(), 15)}`).join('\n');
      throw new Error(`${(error as Error).message}\n${logs}`, { cause: error });
    }
  }

  async leader(): Promise<ClusterNode | undefined> {
    const running = this.servers.filter((s) => s.running);
    const answers = await Promise.all(
      running.map(async (s) => {
        try {
          const res = await fetch(`${s.baseUrl}/v1/status/leader`, {
            signal: AbortSignal.timeout(2_000),
          });
          return await res.json();
        } catch {
          return undefined;
        }
      }),
    );
    const addr = answers[0];
    if (typeof addr !== 'string' || addr === '' || answers.some((a) => a !== addr))
      return undefined;
    return running.find((s) => s.serverAddr === addr);
  }

  stop(): Promise<void> {
    this.stopped ??= (async () => {
      await Promise.all(this.nodes.filter(Boolean).map((n) => n.kill()));
      await rm(this.dataDir, { recursive: true, force: true });
      clusters.delete(this);
    })();
    return this.stopped;
  }
}

class NodeProcess extends AgentProcessBase implements ClusterNode {
  private child?: ChildProcess;
  private closed: Promise<void> = Promise.resolve();
  private exited = true;

  constructor(
    readonly name: string,
    bind: string,
    readonly server: boolean,
    ports: AgentPorts,
  ) {
    super(bind, ports);
  }

  get pid(): number | undefined {
    return this.exited ? undefined : this.child?.pid;
  }
  get running(): boolean {
    return !this.exited;
  }
  /** Resolves when the current process has exited. */
  get whenExited(): Promise<void> {
    return this.closed;
  }

  api(token?: string): ConsulApi {
    return consulApi(this.baseUrl, token);
  }

  spawn(dataRoot: string, extra: string[]): void {
    const args = [
      'agent', '-node', this.name, '-bind', this.bind, '-client', this.bind,
      '-data-dir', path.join(dataRoot, this.name),
      '-http-port', String(this.ports.http), '-dns-port', '-1', '-grpc-port', '-1',
      '-server-port', String(this.ports.server), '-serf-lan-port', String(this.ports.serfLan),
      '-serf-wan-port', '-1', '-retry-interval', '1s',
      ...extra,
    ]; // prettier-ignore
    const spawned = spawnAgentProcess(consulBinary(), args, (text) => this.appendLog(text));
    this.child = spawned.child;
    this.exited = false;
    this.closed = spawned.closed.then(() => {
      if (spawned.spawnError) this.appendLog(`spawn error: ${spawned.spawnError.message}\n`);
      this.exited = true;
    });
  }

  async kill(): Promise<void> {
    const child = this.child;
    if (!child) return;
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await this.closed;
  }
}
