import { fork } from 'node:child_process';
import path from 'node:path';
import { once } from 'node:events';
import { repoRoot } from './consul-agent.harness.js';

export interface EchoServers {
  /** Loopback ports, one per server. */
  ports: number[];
  /** The child process's pid (bench section 7 pins it to its own CPU). */
  pid: number | undefined;
  stop(): Promise<void>;
}

/**
 * `count` minimal HTTP servers in ONE child process (test/support/fixtures/echo-servers.mjs), so
 * that a client measured in this process does not share its event loop with them; server `i`
 * answers after `delaysMs[i]` ms (default 0).
 */
export async function startEchoServers(
  count: number,
  delaysMs: readonly number[] = [],
): Promise<EchoServers> {
  const fixture = path.join(repoRoot(), 'test', 'support', 'fixtures', 'echo-servers.mjs');
  const child = fork(fixture, [String(count), delaysMs.join(',')], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const [message] = (await Promise.race([
    once(child, 'message'),
    once(child, 'exit').then(() => {
      throw new Error('echo servers exited before reporting their ports');
    }),
  ])) as [{ ports: number[] }];
  return {
    ports: message.ports,
    pid: child.pid,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.disconnect();
      await exited;
    },
  };
}
