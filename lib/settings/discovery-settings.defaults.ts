import { hostname, networkInterfaces } from 'node:os';
import type { ConsulConnectionSettings } from './discovery.settings.js';

/**
 * Consul's own env conventions (`CONSUL_HTTP_ADDR`, `CONSUL_HTTP_SSL`, …): only the fields they
 * set, which then stand in for the class defaults.
 */
export function consulEnvDefaults(env: NodeJS.ProcessEnv): Partial<ConsulConnectionSettings> {
  const defaults: Partial<ConsulConnectionSettings> = {};
  if (/^(1|true)$/i.test(env.CONSUL_HTTP_SSL ?? '')) defaults.secure = true;
  const addr = env.CONSUL_HTTP_ADDR?.trim();
  if (addr) {
    try {
      const url = new URL(/^[a-z]+:\/\//i.test(addr) ? addr : `http://${addr}`);
      if (url.protocol === 'https:') defaults.secure = true;
      const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
      if (host) defaults.host = host;
      if (url.port) defaults.port = Number(url.port);
    } catch {
      // A malformed CONSUL_HTTP_ADDR leaves the defaults; explicit settings still win.
    }
  }
  if (env.CONSUL_HTTP_TOKEN) defaults.token = env.CONSUL_HTTP_TOKEN;
  if (env.CONSUL_CACERT) defaults.ca = env.CONSUL_CACERT;
  if (env.CONSUL_CLIENT_CERT) defaults.cert = env.CONSUL_CLIENT_CERT;
  if (env.CONSUL_CLIENT_KEY) defaults.key = env.CONSUL_CLIENT_KEY;
  return defaults;
}

/** The first non-internal IPv4 address of this host, or loopback when there is none. */
export function defaultServiceAddress(): string {
  for (const addresses of Object.values(networkInterfaces())) {
    const found = addresses?.find((a) => a.family === 'IPv4' && !a.internal);
    if (found) return found.address;
  }
  return '127.0.0.1';
}

/** `${name}-${hostname}-${port}`, made to fit the service id pattern. */
export function defaultServiceId(name: string, port: number): string {
  const host = hostname().replace(/[^A-Za-z0-9._:-]/g, '-') || 'host';
  return `${name}-${host}`.slice(0, 120) + `-${port}`;
}
