import { waitFor } from '../../../test/support/wait-for.harness.js';
import { getJson } from './http.js';

// Where the demo finds Consul. Starting a dev agent when none answers is the repository's test
// toolkit's job (test/support/consul-agent.harness.ts), which the demo compiles along with itself.

/** Where the demo's apps reach Consul. */
export interface ConsulTarget {
  host: string;
  port: number;
  secure: boolean;
  url: string;
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
export function waitForLeader(target: ConsulTarget, timeoutMs: number): Promise<string> {
  return waitFor(async () => (await leaderOf(target)) || undefined, {
    timeoutMs,
    intervalMs: 50,
    message: `a Consul leader at ${target.url}`,
  });
}
