import { EventEmitter } from 'node:events';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { types } from 'node:util';
import Consul from 'consul';
import { ConsulResponseError } from '../errors/consul-response.error.js';
import { DiscoveryTimeoutError } from '../errors/discovery-timeout.error.js';
import { DiscoveryUnavailableError } from '../errors/discovery-unavailable.error.js';
import {
  abortedMessage,
  closedMessage,
  tlsFailedMessage,
  unreachableMessage,
} from '../errors/error-messages.js';
import { DiscoveryMetrics } from '../metrics/discovery.metrics.js';
import type { DiscoveryQuery, ServiceInstance } from '../protocol/service-discovery.protocol.js';
import {
  type ConsulConnectionSettings,
  type WatchConsistency,
} from '../settings/discovery.settings.js';
import type {
  AgentServiceDefinition,
  CancelContext,
  IndexedResult,
  RawCallOptions,
  RawConsulClient,
  RawHealthCheck,
  RawHealthEntry,
  RawReadOptions,
  RawResponse,
  RawTxnOperation,
  RawTxnResult,
} from './consul.types.js';
import type { ConsulTransport } from './consul.transport.js';
import { readPem } from '../settings/pem.js';

export interface SessionDefinition {
  name: string;
  /** The service check the session is bound to (`service:<serviceId>`). */
  serviceCheckId: string;
  /** A duration string (`'5s'`): a bare number would be read as seconds or nanoseconds. */
  lockDelay: string;
}

export type LockAttempt =
  { acquired: true; lockIndex: number; modifyIndex: number } | { acquired: false; reason: string };

/** One key under a lock prefix. */
export interface LockEntry {
  key: string;
  /** The session holding it, if any. */
  session?: string;
  /** Acquisitions so far: only grows while the key exists (the fencing token). */
  lockIndex: number;
  modifyIndex: number;
}

/**
 * A read's `datacenter` that means the agent's own one, whatever `consul.datacenter` says
 * (sharding: the membership and locks live where the session does). Consul reads the local
 * datacenter when no `dc` is sent.
 */
export const LOCAL_DATACENTER = '';

/** A key's value, the index a `cas` of it must name, and its lock. */
export interface KeyValue {
  value: string;
  modifyIndex: number;
  lockIndex: number;
  /** The session holding it, if any. */
  session?: string;
}

/** A write of `key` that commits only while `session` holds `lockKey` and `key` is unchanged. */
export interface FencedWrite {
  lockKey: string;
  session: string;
  key: string;
  /** The `ModifyIndex` `key` must still have; 0 = it must not exist yet. */
  index: number;
  value: string;
}

export type FencedWriteResult =
  | { committed: true; lockIndex: number; modifyIndex: number }
  | { committed: false; reason: string };

/** One check the local agent runs (`/v1/agent/checks`); `serviceId` `''` for a node check. */
export interface LocalCheck {
  checkId: string;
  serviceId: string;
  /** `passing`, `warning` or `critical` (maintenance mode is a critical check of its own). */
  status: string;
}

export interface CallOptions {
  /** Aborts the request (the client's `ctx` cancel). */
  signal?: AbortSignal;
}

export interface ReadOptions extends CallOptions, DiscoveryQuery {
  consistency?: WatchConsistency;
}

export interface BlockingReadOptions extends ReadOptions {
  /** Last `X-Consul-Index` seen; 0 or absent = answer at once. */
  index?: number;
  waitMs: number;
  /**
   * `true` for a loop that keeps its long-poll open (it uses the long-poll pool even for its
   * first, immediate read); `false` for one-off re-reads, which share the capped pool.
   */
  longPoll: boolean;
}

const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

interface PapiError extends Error {
  code?: string;
  isResponse?: boolean;
  isTimeout?: boolean;
  isAbort?: boolean;
  response?: { statusCode?: number; body?: unknown };
}

/**
 * The one place that speaks HTTP to Consul: wraps the `consul` client, maps its answers to our
 * types and its failures to our errors, and owns every socket and in-flight request, so
 * `close()` leaves nothing behind.
 */
export class ConsulClient implements ConsulTransport {
  /** `http(s)://host:port`, for messages (never carries the token). */
  readonly target: string;
  private readonly client: RawConsulClient;
  /** Long-polls get their own pool so they never starve short calls of sockets. */
  private readonly longPollClient: RawConsulClient;
  private readonly inflight = new Set<CancelContext>();
  private readonly lifetime = new AbortController();

  constructor(
    private readonly settings: ConsulConnectionSettings,
    private readonly metrics: DiscoveryMetrics = DiscoveryMetrics.noop,
  ) {
    const { host, port, secure } = settings;
    this.target = `${secure ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
    // Read the TLS files once for both pools.
    const tls: TlsFiles = secure
      ? { ca: readPem(settings.ca), cert: readPem(settings.cert), key: readPem(settings.key) }
      : {};
    this.client = this.createClient(settings.maxSockets, tls);
    this.longPollClient = this.createClient(Infinity, tls);
  }

  /** Aborted by `close()`: whatever waits on Consul (backoff, rate limit) stops waiting. */
  get closeSignal(): AbortSignal {
    return this.lifetime.signal;
  }

  get closed(): boolean {
    return this.lifetime.signal.aborted;
  }

  /** Requests currently in flight (short calls and long-polls). */
  get inflightCount(): number {
    return this.inflight.size;
  }

  async registerService(definition: AgentServiceDefinition): Promise<void> {
    await this.call('agent.service.register', {}, this.settings.timeoutMs, (raw) =>
      this.client.agent.service.register({ ...definition, ...raw }),
    );
  }

  async deregisterService(serviceId: string): Promise<void> {
    await this.call('agent.service.deregister', {}, this.settings.timeoutMs, (raw) =>
      this.client.agent.service.deregister({ id: serviceId, ...raw }),
    );
  }

  async passCheck(checkId: string): Promise<void> {
    await this.call('agent.check.pass', {}, this.settings.timeoutMs, (raw) =>
      this.client.agent.check.pass({ id: checkId, ...raw }),
    );
  }

  /** Whether the local agent holds a service with this id (`/v1/agent/services`). */
  async hasLocalService(serviceId: string): Promise<boolean> {
    const [, services] = await this.call('agent.services', {}, this.settings.timeoutMs, (raw) =>
      this.client.agent.service.list(raw),
    );
    return Object.hasOwn(services, serviceId);
  }

  /** Every check the local agent runs, with Consul's status (`/v1/agent/checks`). */
  async localChecks(): Promise<LocalCheck[]> {
    const [, checks] = await this.call('agent.checks', {}, this.settings.timeoutMs, (raw) =>
      this.client.agent.check.list(raw),
    );
    return Object.values(checks).map((check) => ({
      checkId: check.CheckID,
      serviceId: check.ServiceID,
      status: check.Status,
    }));
  }

  /**
   * A session bound to this node's `serfHealth` and the service's own check, released (not
   * deleted) when either fails; `LockDelay` as a duration string. Sent raw: the `consul` client
   * drops `NodeChecks`/`ServiceChecks` from its own create body.
   */
  async createSession(session: SessionDefinition): Promise<string> {
    const body = {
      Name: session.name,
      NodeChecks: ['serfHealth'],
      ServiceChecks: [{ ID: session.serviceCheckId }],
      Behavior: 'release',
      LockDelay: session.lockDelay,
    };
    const [, created] = await this.put<{ ID: string }>('session.create', '/session/create', body);
    return created.ID;
  }

  async destroySession(id: string): Promise<void> {
    await this.call('session.destroy', {}, this.settings.timeoutMs, (raw) =>
      this.client.session.destroy({ id, ...raw }),
    );
  }

  /** Whether the session still exists (an invalidated one is gone). */
  async sessionExists(id: string, options: CallOptions = {}): Promise<boolean> {
    const [, sessions] = await this.call('session.info', options, this.settings.timeoutMs, (raw) =>
      this.client.session.info({ id, ...raw }),
    );
    return (sessions ?? []).length > 0;
  }

  /**
   * Acquires `key` for `session` in a transaction, which answers with the entry, so the fencing
   * token (`LockIndex`) comes with the acquisition. Refused (held by another session, lock-delay,
   * invalid session): `{ acquired: false, reason }`.
   */
  async lock(key: string, session: string, value: string): Promise<LockAttempt> {
    const operations: RawTxnOperation[] = [
      {
        KV: {
          Verb: 'lock',
          Key: key,
          Value: Buffer.from(value).toString('base64'),
          Session: session,
        },
      },
    ];
    const [response, result] = await this.put<RawTxnResult>('txn', '/txn', operations, [409]);
    const entry = result.Results?.[0]?.KV;
    if (response.statusCode === 200 && entry) {
      return { acquired: true, lockIndex: entry.LockIndex, modifyIndex: entry.ModifyIndex };
    }
    return { acquired: false, reason: txnErrors(result) };
  }

  /** Releases `key` if `session` holds it (`?release=`: no lock-delay follows); `true` = released. */
  async unlock(key: string, session: string): Promise<boolean> {
    const [, released] = await this.call('kv.release', {}, this.settings.timeoutMs, (raw) =>
      this.client.kv.set({ key, value: '', release: session, ...raw }),
    );
    return released === true;
  }

  /** One key's value; `undefined` when it does not exist. */
  async readKey(key: string, options: CallOptions = {}): Promise<KeyValue | undefined> {
    const [, entry] = await this.call('kv.get', options, this.settings.timeoutMs, (raw) =>
      this.client.kv.get({ ...raw, key }),
    );
    if (!entry) return undefined;
    return {
      value: entry.Value ?? '',
      modifyIndex: entry.ModifyIndex,
      lockIndex: entry.LockIndex,
      session: entry.Session || undefined,
    };
  }

  /**
   * One transaction: `check-session` of `lockKey` (its answer carries the lock's `LockIndex`) and
   * a `cas` of `key` at `index`; both commit or neither. Refused (the session does not hold the
   * lock, the index is stale): `{ committed: false, reason }` from Consul's 409.
   */
  async writeFenced(write: FencedWrite): Promise<FencedWriteResult> {
    const operations: RawTxnOperation[] = [
      { KV: { Verb: 'check-session', Key: write.lockKey, Session: write.session } },
      {
        KV: {
          Verb: 'cas',
          Key: write.key,
          Value: Buffer.from(write.value).toString('base64'),
          Index: write.index,
        },
      },
    ];
    const [response, result] = await this.put<RawTxnResult>('txn', '/txn', operations, [409]);
    const [lock, written] = result.Results ?? [];
    if (response.statusCode === 200 && lock && written) {
      return { committed: true, lockIndex: lock.KV.LockIndex, modifyIndex: written.KV.ModifyIndex };
    }
    return { committed: false, reason: txnErrors(result) };
  }

  /** Blocking query on every key under `prefix` (`?recurse`); no key yet → `[]`. */
  async watchPrefix(
    prefix: string,
    options: BlockingReadOptions,
  ): Promise<IndexedResult<LockEntry[]>> {
    const [response, entries] = await this.blockingCall('kv.get', options, (raw, client) =>
      client.kv.get({ ...raw, key: prefix, recurse: true }),
    );
    const value = (entries ?? []).map((e): LockEntry => ({
      key: e.Key,
      session: e.Session || undefined,
      lockIndex: e.LockIndex,
      modifyIndex: e.ModifyIndex,
    }));
    return { value, index: consulIndex(response) };
  }

  /** Instances of `name` whose checks all pass, sorted by `serviceId`: one immediate read. */
  async healthyInstances(name: string, options: ReadOptions = {}): Promise<ServiceInstance[]> {
    const read = { ...options, waitMs: 0, longPoll: false };
    return (await this.watchHealthyInstances(name, read)).value;
  }

  /** Blocking query on `/v1/health/service/<name>?passing` (immediate without an index). */
  async watchHealthyInstances(
    name: string,
    options: BlockingReadOptions,
  ): Promise<IndexedResult<ServiceInstance[]>> {
    const [response, entries] = await this.blockingCall('health.service', options, (raw, client) =>
      client.health.service({
        ...raw,
        service: name,
        passing: true,
        tag: options.tag,
      }),
    );
    return { value: toInstances(entries), index: consulIndex(response) };
  }

  /** Blocking query on `/v1/health/state/any`: every check of the datacenter. */
  async watchCheckStates(options: BlockingReadOptions): Promise<IndexedResult<RawHealthCheck[]>> {
    const [response, checks] = await this.blockingCall('health.state', options, (raw, client) =>
      client.health.state({ ...raw, state: 'any' }),
    );
    return { value: checks, index: consulIndex(response) };
  }

  /** Blocking query on `/v1/catalog/services`: service names and their tags. */
  async watchServiceNames(
    options: BlockingReadOptions,
  ): Promise<IndexedResult<Record<string, string[]>>> {
    const [response, services] = await this.blockingCall(
      'catalog.services',
      options,
      (raw, client) => client.catalog.service.list(raw),
    );
    return { value: services, index: consulIndex(response) };
  }

  /** Aborts every request in flight and destroys the keep-alive sockets. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.lifetime.abort();
    for (const ctx of this.inflight) ctx.emit('cancel');
    this.inflight.clear();
    this.client.destroy();
    this.longPollClient.destroy();
  }

  /**
   * A PUT with a body the `consul` client would rewrite, through its own HTTP stack; a status in
   * `accept` is an answer, not a failure.
   */
  private put<T>(
    operation: string,
    path: string,
    body: unknown,
    accept: readonly number[] = [],
  ): Promise<[RawResponse, T]> {
    const { token } = this.settings;
    return this.call(
      operation,
      {},
      this.settings.timeoutMs,
      (raw) =>
        this.client._put(
          {
            name: operation,
            path,
            query: {},
            headers: token ? { 'x-consul-token': token } : {},
            type: 'json',
            body,
            ...raw,
          },
          (request, next) => {
            const status = request.res?.statusCode ?? 0;
            if (request.err && !accept.includes(status)) {
              if (request.res) request.err.response = request.res;
              return next(false, request.err);
            }
            next(false, undefined, [request.res, request.res?.body]);
          },
        ) as Promise<[RawResponse, T]>,
    );
  }

  /** Long-poll loops use their own pool; one-off re-reads share the capped one. */
  private blockingCall<T>(
    operation: string,
    options: BlockingReadOptions,
    run: (raw: RawCallOptions & RawReadOptions, client: RawConsulClient) => Promise<T>,
  ): Promise<T> {
    const read: RawReadOptions = this.readOptions(options);
    let timeoutMs = this.settings.timeoutMs;
    if (options.index && options.index > 0) {
      read.index = String(options.index);
      read.wait = `${options.waitMs}ms`;
      // Consul adds up to wait/16 of jitter before answering an idle blocking query.
      timeoutMs += Math.ceil((options.waitMs * 17) / 16);
    }
    const client = options.longPoll ? this.longPollClient : this.client;
    const blocking = read.index !== undefined;
    return this.call(
      operation,
      options,
      timeoutMs,
      (raw) => run({ ...read, ...raw }, client),
      blocking,
    );
  }

  private readOptions(options: ReadOptions): RawReadOptions {
    const read: RawReadOptions = {};
    const dc = options.datacenter ?? this.settings.datacenter;
    if (dc !== undefined && dc !== LOCAL_DATACENTER) read.dc = dc;
    if (options.consistency === 'stale') read.stale = true;
    if (options.consistency === 'consistent') read.consistent = true;
    return read;
  }

  /**
   * One request with a deadline, cancellable through `signal` and `close()`, retried once at once
   * when a kept-alive socket turns out to be reset (the retry gets a fresh socket).
   */
  private async call<T>(
    operation: string,
    options: CallOptions,
    timeoutMs: number,
    run: (raw: RawCallOptions) => Promise<T>,
    blocking = false,
  ): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw new DiscoveryUnavailableError(closedMessage(operation), 'ECLOSED');
      if (options.signal?.aborted)
        throw new DiscoveryUnavailableError(abortedMessage(operation), 'EABORTED');
      const ctx: CancelContext = new EventEmitter();
      ctx.includeResponse = true;
      const cancel = (): boolean => ctx.emit('cancel');
      this.inflight.add(ctx);
      options.signal?.addEventListener('abort', cancel, { once: true });
      const startedAt = performance.now();
      try {
        const result = await run({ ctx, timeout: timeoutMs });
        // The client tells failures from results with `instanceof Error`, which fails for
        // errors made in another realm (Node's own socket errors under Jest's VM sandbox).
        if (types.isNativeError(result)) throw result;
        this.metrics.consulRequest(operation, blocking, startedAt);
        return result;
      } catch (error) {
        const mapped = this.mapError(operation, error as PapiError, timeoutMs);
        this.metrics.consulRequest(operation, blocking, startedAt, mapped);
        const reset =
          mapped instanceof DiscoveryUnavailableError && RESET_CODES.has(mapped.code ?? '');
        if (attempt > 0 || !reset || this.closed || options.signal?.aborted) throw mapped;
      } finally {
        this.inflight.delete(ctx);
        options.signal?.removeEventListener('abort', cancel);
      }
    }
  }

  private mapError(operation: string, error: PapiError, timeoutMs: number): Error {
    if (error.isResponse && error.response?.statusCode) {
      const body = error.response.body;
      const text = typeof body === 'string' ? body : Buffer.isBuffer(body) ? body.toString() : '';
      return new ConsulResponseError(
        operation,
        error.response.statusCode,
        text.trim() || stripPrefix(error.message),
      );
    }
    if (error.isTimeout) return new DiscoveryTimeoutError(operation, timeoutMs);
    if (error.isAbort) return new DiscoveryUnavailableError(abortedMessage(operation), 'EABORTED');
    const detail = stripPrefix(error.message ?? String(error))
      .replace(/\s+/g, ' ')
      .trim();
    // A foreign-realm error may arrive re-wrapped by the client, without its `code`.
    const code =
      error.code ??
      /\b(E[A-Z]{3,})\b/.exec(detail)?.[1] ??
      (/socket hang up/i.test(detail) ? 'ECONNRESET' : undefined);
    const tls = /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY|EPROTO/i.test(`${code ?? ''} ${detail}`);
    const message = (tls ? tlsFailedMessage : unreachableMessage)(operation, this.target, detail);
    return new DiscoveryUnavailableError(message, code);
  }

  private createClient(maxSockets: number, tls: TlsFiles): RawConsulClient {
    const { host, port, secure, token } = this.settings;
    const agent = secure
      ? new HttpsAgent({ keepAlive: true, maxSockets, ...tls })
      : new HttpAgent({ keepAlive: true, maxSockets });
    return new Consul({
      host,
      port,
      secure,
      agent,
      defaults: token ? { token } : undefined,
    }) as unknown as RawConsulClient;
  }
}

interface TlsFiles {
  ca?: string;
  cert?: string;
  key?: string;
}

/** The client prefixes messages with `consul: <operation>: `; ours name the operation already. */
function stripPrefix(message: string): string {
  return message.replace(/^consul: [\w.]+: /, '');
}

function txnErrors(result: RawTxnResult): string {
  return result.Errors?.map((e) => e.What).join('; ') ?? '';
}

function consulIndex(response: RawResponse): number {
  const header = response.headers['x-consul-index'];
  const index = Number(Array.isArray(header) ? header[0] : header);
  return Number.isFinite(index) ? index : 0;
}

function toInstances(entries: RawHealthEntry[]): ServiceInstance[] {
  return entries
    .filter((entry) => entry.Checks.every((check) => check.Status === 'passing'))
    .map((entry): ServiceInstance => {
      const instance: ServiceInstance = {
        serviceId: entry.Service.ID,
        name: entry.Service.Service,
        address: entry.Service.Address || entry.Node.Address,
        port: entry.Service.Port,
        tags: entry.Service.Tags ?? [],
        meta: entry.Service.Meta ?? {},
        node: entry.Node.Node,
      };
      if (entry.Node.Datacenter) instance.datacenter = entry.Node.Datacenter;
      return instance;
    })
    .sort((a, b) => (a.serviceId < b.serviceId ? -1 : a.serviceId > b.serviceId ? 1 : 0));
}
