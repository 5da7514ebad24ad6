import type {
  BlockingReadOptions,
  CallOptions,
  FencedWrite,
  FencedWriteResult,
  KeyValue,
  LocalCheck,
  LockAttempt,
  LockEntry,
  ReadOptions,
  SessionDefinition,
} from '../consul/consul.client.js';
import type { ConsulTransport } from '../consul/consul.transport.js';
import type {
  AgentServiceDefinition,
  IndexedResult,
  RawHealthCheck,
} from '../consul/consul.types.js';
import { ConsulResponseError } from '../errors/consul-response.error.js';
import { DiscoveryUnavailableError } from '../errors/discovery-unavailable.error.js';
import { abortedMessage, closedMessage } from '../errors/error-messages.js';
import type { ServiceInstance } from '../protocol/service-discovery.protocol.js';
import { IN_MEMORY_NODE, serviceIdOfCheck, type InMemoryCatalog } from './in-memory.catalog.js';
import { InMemoryLocks } from './in-memory.locks.js';

/** The address the in-memory agent gives a registration without one (its own). */
export const IN_MEMORY_ADDRESS = '127.0.0.1';

/**
 * `ConsulTransport` on the in-memory catalog and locks, answering as the agent does: blocking
 * queries wait for a change of their index (woken by the catalog, not polled) or their wait
 * time, and fail as `ConsulClient`'s do when aborted or closed; a TTL pass for an unknown check
 * is a 404. It runs no HTTP or TCP checks: such a registration stays critical, as Consul's does
 * until its check passes, until the test calls `setPassing(id, true)`.
 */
export class InMemoryTransport implements ConsulTransport {
  readonly target = 'the in-memory double';
  private readonly lifetime = new AbortController();
  private readonly locks: InMemoryLocks;

  constructor(private readonly catalog: InMemoryCatalog) {
    this.locks = new InMemoryLocks(catalog);
  }

  get closeSignal(): AbortSignal {
    return this.lifetime.signal;
  }

  get closed(): boolean {
    return this.lifetime.signal.aborted;
  }

  async registerService(definition: AgentServiceDefinition): Promise<void> {
    this.open('agent.service.register');
    const check = definition.check;
    const ttl = check !== undefined && 'ttl' in check;
    this.catalog.register(
      {
        serviceId: definition.id,
        name: definition.name,
        address: definition.address ?? IN_MEMORY_ADDRESS,
        port: definition.port,
        tags: definition.tags,
        meta: definition.meta,
        node: IN_MEMORY_NODE,
      },
      // No check: passing (only the node's, which is). TTL: as it starts. HTTP/TCP: critical.
      { ttl, passing: check === undefined || (ttl && check.status === 'passing') },
    );
    return Promise.resolve();
  }

  async deregisterService(serviceId: string): Promise<void> {
    this.open('agent.service.deregister');
    // An unknown service is no error (Consul 1.8 answers 200).
    this.catalog.deregister(serviceId);
    return Promise.resolve();
  }

  async passCheck(checkId: string): Promise<void> {
    this.open('agent.check.pass');
    if (!this.catalog.pass(serviceIdOfCheck(checkId))) {
      throw new ConsulResponseError(
        'agent.check.pass',
        404,
        `Unknown check ID "${checkId}". Ensure that the check ID is passed, not the check name.`,
      );
    }
    return Promise.resolve();
  }

  async hasLocalService(serviceId: string): Promise<boolean> {
    this.open('agent.services');
    return Promise.resolve(this.catalog.has(serviceId));
  }

  async localChecks(): Promise<LocalCheck[]> {
    this.open('agent.checks');
    return Promise.resolve(
      this.catalog.checks().map((check) => ({
        checkId: check.CheckID,
        serviceId: check.ServiceID,
        status: check.Status,
      })),
    );
  }

  async healthyInstances(name: string, options: ReadOptions = {}): Promise<ServiceInstance[]> {
    const read = { ...options, waitMs: 0, longPoll: false };
    return (await this.watchHealthyInstances(name, read)).value;
  }

  watchHealthyInstances(
    name: string,
    options: BlockingReadOptions,
  ): Promise<IndexedResult<ServiceInstance[]>> {
    return this.blocking(
      'health.service',
      options,
      () => this.catalog.indexOf(name),
      () => this.catalog.passing(name, options),
    );
  }

  watchCheckStates(options: BlockingReadOptions): Promise<IndexedResult<RawHealthCheck[]>> {
    return this.blocking(
      'health.state',
      options,
      () => this.catalog.index,
      () => this.catalog.checks(),
    );
  }

  watchServiceNames(
    options: BlockingReadOptions,
  ): Promise<IndexedResult<Record<string, string[]>>> {
    return this.blocking(
      'catalog.services',
      options,
      () => this.catalog.registrationIndex,
      () => this.catalog.serviceNames(),
    );
  }

  async createSession(session: SessionDefinition): Promise<string> {
    this.open('session.create');
    return Promise.resolve(this.locks.createSession(session));
  }

  async destroySession(id: string): Promise<void> {
    this.open('session.destroy');
    this.locks.destroySession(id);
    return Promise.resolve();
  }

  async sessionExists(id: string, options: CallOptions = {}): Promise<boolean> {
    this.open('session.info', options.signal);
    return Promise.resolve(this.locks.sessionExists(id));
  }

  async lock(key: string, session: string, value: string): Promise<LockAttempt> {
    this.open('txn');
    return Promise.resolve(this.locks.lock(key, session, value));
  }

  async unlock(key: string, session: string): Promise<boolean> {
    this.open('kv.release');
    return Promise.resolve(this.locks.unlock(key, session));
  }

  watchPrefix(prefix: string, options: BlockingReadOptions): Promise<IndexedResult<LockEntry[]>> {
    return this.blocking(
      'kv.get',
      options,
      () => this.locks.index,
      () => this.locks.entries(prefix),
    );
  }

  async readKey(key: string, options: CallOptions = {}): Promise<KeyValue | undefined> {
    this.open('kv.get', options.signal);
    return Promise.resolve(this.locks.read(key));
  }

  async writeFenced(write: FencedWrite): Promise<FencedWriteResult> {
    this.open('txn');
    return Promise.resolve(this.locks.writeFenced(write));
  }

  /** Every blocking query in wait ends (rejected as aborted), and so does its timer. */
  close(): void {
    this.lifetime.abort();
  }

  /** Consul's rule: with an index, answer once the index moved past it or `wait` ran out. */
  private async blocking<T>(
    operation: string,
    options: BlockingReadOptions,
    indexNow: () => number,
    read: () => T,
  ): Promise<IndexedResult<T>> {
    this.open(operation, options.signal);
    const { datacenter } = options;
    if (datacenter !== undefined && !this.catalog.knowsDatacenter(datacenter)) {
      // As a Consul agent answers a datacenter it has no path to.
      throw new ConsulResponseError(operation, 500, 'No path to datacenter');
    }
    const index = options.index ?? 0;
    if (index > 0 && indexNow() <= index) {
      await this.change(operation, () => indexNow() > index, options);
    }
    return { value: read(), index: indexNow() };
  }

  private change(
    operation: string,
    moved: () => boolean,
    { waitMs, signal }: BlockingReadOptions,
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      const signals = [this.lifetime.signal, ...(signal ? [signal] : [])];
      const settle = (error?: Error): void => {
        clearTimeout(timer);
        unsubscribe();
        for (const s of signals) s.removeEventListener('abort', onAbort);
        if (error) reject(error);
        else resolve();
      };
      const onAbort = (): void => settle(aborted(operation));
      // Not unref'd, like the open socket of a real long-poll; cleared on every way out.
      const timer = setTimeout(settle, waitMs);
      const unsubscribe = this.catalog.onChange(() => {
        if (moved()) settle();
      });
      for (const s of signals) s.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** As `ConsulClient` refuses a call once closed or aborted. */
  private open(operation: string, signal?: AbortSignal): void {
    if (this.closed) throw new DiscoveryUnavailableError(closedMessage(operation), 'ECLOSED');
    if (signal?.aborted) throw aborted(operation);
  }
}

function aborted(operation: string): DiscoveryUnavailableError {
  return new DiscoveryUnavailableError(abortedMessage(operation), 'EABORTED');
}
