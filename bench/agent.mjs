// Starts a Consul dev agent on free loopback ports (the CONSUL.md command line) and stops it.
import { execFileSync, spawn } from 'node:child_process';
import net from 'node:net';
import process from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const HOST = '127.0.0.1';
const PORT_ATTEMPTS = 5;
const READY_TIMEOUT_MS = 15_000;

/** Path printed by scripts/consul.sh (honours CONSUL_BIN, PATH, a local install, else fetches). */
export function consulBinary() {
  const script = fileURLToPath(new URL('../scripts/consul.sh', import.meta.url));
  return execFileSync('bash', [script], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();
}

export function freePort(host = HOST) {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function distinctPorts(count) {
  const ports = new Set();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

const running = new Set();
// Last resort: whatever way this process ends, no agent outlives it.
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/**
 * A `sh` that SIGKILLs the agent once its stdin pipe from us closes, i.e. when this process dies
 * in a way that runs no exit handler (SIGKILL, OOM).
 */
function watchdog(pid) {
  const dog = spawn(
    'sh',
    ['-c', 'read _; kill -9 "$1" 2>/dev/null', 'consul-watchdog', String(pid)],
    {
      stdio: ['pipe', 'ignore', 'ignore'],
    },
  );
  dog.on('error', () => undefined);
  dog.unref();
  dog.stdin.unref();
  return dog;
}

class AddressInUse extends Error {}

/** Starts a dev agent; retries with fresh ports on "address already in use". */
export async function startAgent() {
  const bin = consulBinary();
  let last;
  for (let attempt = 1; attempt <= PORT_ATTEMPTS; attempt++) {
    const [http, server, serfLan] = await distinctPorts(3);
    try {
      return await launch(bin, { http, server, serfLan });
    } catch (error) {
      if (!(error instanceof AddressInUse)) throw error;
      last = error;
    }
  }
  throw new Error(`Consul agent: ports kept clashing after ${PORT_ATTEMPTS} attempts`, {
    cause: last,
  });
}

async function launch(bin, ports) {
  const args = [
    'agent', '-dev', '-bind', HOST, '-client', HOST,
    '-http-port', String(ports.http), '-dns-port', '-1', '-grpc-port', '-1',
    '-server-port', String(ports.server), '-serf-lan-port', String(ports.serfLan),
    '-serf-wan-port', '-1', '-log-level', 'warn',
  ]; // prettier-ignore
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  const dog = watchdog(child.pid);
  let log = '';
  const onData = (chunk) => {
    log = (log + chunk.toString('utf8')).slice(-64 * 1024);
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const closed = new Promise((resolve) => {
    child.once('close', resolve);
    child.once('error', resolve);
  });
  let exited = false;
  void closed.then(() => {
    exited = true;
    running.delete(child);
    dog.kill('SIGKILL');
  });

  const baseUrl = `http://${HOST}:${ports.http}`;
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (exited) {
      await closed;
      if (/address already in use/i.test(log)) throw new AddressInUse(log);
      throw new Error(`Consul agent exited at start (code ${child.exitCode}):\n${log}`);
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      await closed;
      throw new Error(
        `Consul agent on ${baseUrl} not ready within ${READY_TIMEOUT_MS} ms:\n${log}`,
      );
    }
    try {
      const leader = await (
        await fetch(`${baseUrl}/v1/status/leader`, { signal: AbortSignal.timeout(1000) })
      ).json();
      const nodes = await (
        await fetch(`${baseUrl}/v1/catalog/nodes`, { signal: AbortSignal.timeout(1000) })
      ).json();
      if (leader === `${HOST}:${ports.server}` && Array.isArray(nodes) && nodes.length > 0) break;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }

  const self = await (await fetch(`${baseUrl}/v1/agent/self`)).json();
  return {
    host: HOST,
    port: ports.http,
    baseUrl,
    pid: child.pid,
    version: self?.Config?.Version ?? 'unknown',
    /** SIGTERM, SIGKILL after 2 s; resolves once the process is gone. */
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
      await closed;
      clearTimeout(timer);
    },
  };
}
