import { hostname, networkInterfaces } from 'node:os';

export interface ConsulEnvDefaults {
  host: string;
  port: number;
  secure: boolean;
  token?: string;
  ca?: string;
  cert?: string;
  key?: string;
}

/** Consul's own env conventions (`CONSUL_HTTP_ADDR`, `CONSUL_HTTP_SSL`, …) as defaults. */
export function consulEnvDefaults(env: NodeJS.ProcessEnv): ConsulEnvDefaults {
  let host = '127.0.0.1';
  let port = 8500;
  let secure = /^(1|true)$/i.test(env.CONSUL_HTTP_SSL ?? '');
  const addr = env.CONSUL_HTTP_ADDR?.trim();
  if (addr) {
    try {
      const url = new URL(/^[a-z]+:\/\//i.test(addr) ? addr : `http://${addr}`);
      secure = secure || url.protocol === 'https:';
      host = url.hostname.replace(/^\[(.*)\]$/, '$1') || host;
      port = url.port ? Number(url.port) : port;
    } catch {
      // A malformed CONSUL_HTTP_ADDR leaves the defaults; explicit settings still win.
    }
  }
  return {
    host,
    port,
    secure,
    token: env.CONSUL_HTTP_TOKEN || undefined,
    ca: env.CONSUL_CACERT || undefined,
    cert: env.CONSUL_CLIENT_CERT || undefined,
    key: env.CONSUL_CLIENT_KEY || undefined,
  };
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
