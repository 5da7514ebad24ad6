import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { getJson } from './http.js';
import { freeLoopbackPorts } from './ports.js';
import { pollUntil, StopPolling, withDeadline } from './poll.js';

const run = promisify(execFile);

/** Where the demo's apps reach Consul. */
export interface ConsulTarget {
  host: string;
  port: number;
  secure: boolean;
  url: string;
}

export interface RunningAgent {
  target: ConsulTarget;
  leader: string;
  /** Set when the demo started this agent itself (and so must stop it). */
  process?: ChildProcess;
}

/** The agent named by `CONSUL_HTTP_ADDR` (Consul's conventions), else Consul's default address. */
export function targetFromEnv(env: NodeJS.ProcessEnv): ConsulTarget {
  const raw = env.CONSUL_HTTP_ADDR?.trim() || '127.0.0.1:8500';
  const ssl = env.CONSUL_HTTP_SSL?.toLowerCase() === 'true';
  const url = new URL(
    /^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `${ssl ? 'https' : 'http'}://${raw}`,
  );
  const secure = url.protocol === 'https:';
  const port = url.port ? Number(url.port) : 8500;
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  return { host, port, secure, url: `${url.protocol}//${url.hostname}:${port}` };
}

/** GET /v1/status/leader: the leader's address, `''` while there is none. */
export async function leaderOf(target: ConsulTarget, timeoutMs = 1000): Promise<string> {
  const answer = await getJson(`${target.url}/v1/status/leader`, timeoutMs);
  if (typeof answer !== 'string') throw new Error(`unexpected /v1/status/leader answer`);
  return answer;
}

/** Waits (bounded) until the agent reports a leader. */
export function waitForLeader(
  target: ConsulTarget,
  timeoutMs: number,
  process?: ChildProcess,
): Promise<string> {
  return pollUntil(`a Consul leader at ${target.url}`, timeoutMs, async () => {
    if (process && (process.exitCode !== null || process.signalCode !== null)) {
      throw new StopPolling('the agent exited');
    }
    const leader = await leaderOf(target);
    return leader === '' ? undefined : leader;
  });
}

/** The repository root: the nearest folder above this file with a package.json. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('cannot find the repository root (no package.json above)');
    dir = parent;
  }
  return dir;
}

/** The Consul binary, as found (or installed) by scripts/consul.sh. */
export async function consulBinary(): Promise<{ path: string; version: string }> {
  const script = join(repoRoot(), 'scripts', 'consul.sh');
  let path: string;
  try {
    path = (await run('bash', [script], { timeout: 120_000 })).stdout.trim();
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new Error(
      `scripts/consul.sh could not provide a Consul binary${stderr ? `:\n${stderr}` : ''}`,
      { cause: error },
    );
  }
  const { stdout } = await run(path, ['version'], { timeout: 10_000 });
  return { path, version: stdout.split('\n')[0].trim() };
}

/**
 * Starts `consul agent -dev` on free loopback ports and waits for its leader. Picking a free
 * port and then binding it is racy, so an agent that dies with "address already in use" is
 * started again on new ports.
 */
export async function startDevAgent(
  binary: string,
  hooks: { onSpawn: (child: ChildProcess) => void; onRetry: (reason: string) => void },
  maxAttempts = 5,
): Promise<RunningAgent> {
  for (let attempt = 1; ; attempt++) {
    const [httpPort, serverPort, serfLanPort] = await freeLoopbackPorts(3);
    const args = [
      'agent',
      '-dev',
      '-bind',
      '127.0.0.1',
      '-client',
      '127.0.0.1',
      '-http-port',
      String(httpPort),
      '-dns-port',
      '-1',
      '-grpc-port',
      '-1',
      '-server-port',
      String(serverPort),
      '-serf-lan-port',
      String(serfLanPort),
      '-serf-wan-port',
      '-1',
    ];
    const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    hooks.onSpawn(child);
    const output: string[] = [];
    const collect = (chunk: Buffer): void => {
      output.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      output.splice(0, Math.max(0, output.length - 40));
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));

    const target: ConsulTarget = {
      host: '127.0.0.1',
      port: httpPort,
      secure: false,
      url: `http://127.0.0.1:${httpPort}`,
    };
    try {
      const leader = await Promise.race([
        waitForLeader(target, 20_000, child),
        spawnError.then((error) => {
          throw new Error(`cannot run ${binary}: ${error.message}`);
        }),
      ]);
      child.stdout.removeListener('data', collect);
      child.stderr.removeListener('data', collect);
      child.stdout.resume();
      child.stderr.resume();
      return { target, leader, process: child };
    } catch (error) {
      await stopAgent(child).catch(() => undefined);
      const log = output.join('\n');
      if (/address already in use/i.test(log) && attempt < maxAttempts) {
        hooks.onRetry(
          `ports ${httpPort}/${serverPort}/${serfLanPort} were taken; retrying on new ports`,
        );
        continue;
      }
      const reason = error instanceof Error ? error.message : String(error);
      throw new Error(
        `the Consul dev agent did not come up: ${reason}\n--- agent output ---\n${log}`,
        { cause: error },
      );
    }
  }
}

/** SIGTERM, wait (bounded) for the exit, SIGKILL if it does not come. */
export async function stopAgent(child: ChildProcess, timeoutMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  try {
    await withDeadline('the Consul agent to exit', timeoutMs, exited);
  } catch {
    child.kill('SIGKILL');
    await withDeadline('the Consul agent to die after SIGKILL', 5_000, exited);
  }
}
