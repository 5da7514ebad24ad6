import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';

// Raw Consul HTTP calls for assertions, on Node's fetch: independent of the library under test.

export type CheckStatus = 'passing' | 'warning' | 'critical';

export interface AgentServiceEntry {
  ID: string;
  Service: string;
  Tags: string[] | null;
  Meta: Record<string, string> | null;
  Address: string;
  Port: number;
  [key: string]: unknown;
}

export interface AgentCheckEntry {
  CheckID: string;
  Name: string;
  Status: CheckStatus;
  Output: string;
  ServiceID: string;
  ServiceName: string;
  [key: string]: unknown;
}

export interface HealthServiceEntry {
  Node: { Node: string; Address: string; Datacenter: string; [key: string]: unknown };
  Service: AgentServiceEntry;
  Checks: AgentCheckEntry[];
}

export interface RawResponse {
  status: number;
  text: string;
  /** Parsed body, or undefined when it is not JSON. */
  json: unknown;
}

/** A non-2xx answer from Consul, with its status and body. */
export class ConsulApiError extends Error {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly status: number,
    readonly body: string,
  ) {
    super(`${method} ${path} → ${status} ${body.trim()}`);
    this.name = 'ConsulApiError';
  }
}

export interface ConsulApi {
  readonly baseUrl: string;
  /** Any call; never throws on an HTTP status (use it to assert 403s etc.). */
  request(method: string, path: string, body?: unknown, token?: string): Promise<RawResponse>;
  agentServices(): Promise<Record<string, AgentServiceEntry>>;
  agentChecks(): Promise<Record<string, AgentCheckEntry>>;
  healthService(
    name: string,
    opts?: { passing?: boolean; tag?: string },
  ): Promise<HealthServiceEntry[]>;
  /** Service IDs of `name`'s instances in `?passing`, sorted. */
  passingIds(name: string, opts?: { tag?: string }): Promise<string[]>;
  registerService(body: Record<string, unknown>): Promise<void>;
  deregisterService(serviceId: string): Promise<void>;
  passTtl(checkId: string, note?: string): Promise<void>;
  warnTtl(checkId: string, note?: string): Promise<void>;
  failTtl(checkId: string, note?: string): Promise<void>;
  /** 1.8 ACL: a policy with `rules` (HCL or JSON), then a token holding it; returns its SecretID. */
  createAclToken(masterToken: string, rules: string): Promise<string>;
}

export function consulApi(baseUrl: string, token?: string): ConsulApi {
  const request = async (
    method: string,
    path: string,
    body?: unknown,
    tokenOverride = token,
  ): Promise<RawResponse> => {
    const headers: Record<string, string> = {};
    if (tokenOverride) headers['X-Consul-Token'] = tokenOverride;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    return { status: res.status, text, json: parseJson(text) };
  };

  const ok = async <T>(method: string, path: string, body?: unknown, tok?: string): Promise<T> => {
    const res = await request(method, path, body, tok ?? token);
    if (res.status < 200 || res.status > 299) {
      throw new ConsulApiError(method, path, res.status, res.text);
    }
    return res.json as T;
  };

  const check = (verb: 'pass' | 'warn' | 'fail') => async (checkId: string, note?: string) => {
    const query = note === undefined ? '' : `?note=${encodeURIComponent(note)}`;
    await ok('PUT', `/v1/agent/check/${verb}/${encodeURIComponent(checkId)}${query}`);
  };

  const healthService: ConsulApi['healthService'] = (name, { passing = false, tag } = {}) => {
    const query = new URLSearchParams();
    if (passing) query.set('passing', 'true');
    if (tag !== undefined) query.set('tag', tag);
    const qs = query.size > 0 ? `?${query.toString()}` : '';
    return ok('GET', `/v1/health/service/${encodeURIComponent(name)}${qs}`);
  };

  return {
    baseUrl,
    request,
    agentServices: () => ok('GET', '/v1/agent/services'),
    agentChecks: () => ok('GET', '/v1/agent/checks'),
    healthService,
    passingIds: async (name, { tag } = {}) =>
      (await healthService(name, { passing: true, tag })).map((e) => e.Service.ID).sort(),
    registerService: (body) => ok('PUT', '/v1/agent/service/register', body),
    deregisterService: (serviceId) =>
      ok('PUT', `/v1/agent/service/deregister/${encodeURIComponent(serviceId)}`),
    passTtl: check('pass'),
    warnTtl: check('warn'),
    failTtl: check('fail'),
    createAclToken: async (masterToken, rules) => {
      const name = `test-${randomUUID()}`;
      await ok('PUT', '/v1/acl/policy', { Name: name, Rules: rules }, masterToken);
      const created = await ok<{ SecretID: string }>(
        'PUT',
        '/v1/acl/token',
        { Description: name, Policies: [{ Name: name }] },
        masterToken,
      );
      return created.SecretID;
    },
  };
}

export interface HttpsRequestOptions {
  caFile: string;
  /** Client certificate for mTLS (verify_incoming). */
  certFile?: string;
  keyFile?: string;
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  timeoutMs?: number;
}

/**
 * One HTTPS request trusting `caFile` (Node's fetch cannot take a CA or client cert).
 * Rejects on TLS/transport errors; resolves with any HTTP status.
 */
export function httpsRequest(
  url: string,
  {
    caFile,
    certFile,
    keyFile,
    method = 'GET',
    headers,
    body,
    timeoutMs = 10_000,
  }: HttpsRequestOptions,
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      {
        method,
        headers,
        ca: readFileSync(caFile),
        cert: certFile === undefined ? undefined : readFileSync(certFile),
        key: keyFile === undefined ? undefined : readFileSync(keyFile),
        agent: false, // no pooled socket outlives the call
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode ?? 0, text, json: parseJson(text) });
        });
      },
    );
    req.on('timeout', () =>
      req.destroy(new Error(`${method} ${url} timed out after ${timeoutMs} ms`)),
    );
    req.on('error', reject);
    req.end(body);
  });
}

function parseJson(text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
