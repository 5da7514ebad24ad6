import type { Scheduler } from 'fast-check';
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
} from '../../lib/consul/consul.client.js';
import type { ConsulTransport } from '../../lib/consul/consul.transport.js';
import type {
  AgentServiceDefinition,
  IndexedResult,
  RawHealthCheck,
} from '../../lib/consul/consul.types.js';
import { DiscoveryUnavailableError } from '../../lib/errors/discovery-unavailable.error.js';
import type { ServiceInstance } from '../../lib/protocol/service-discovery.protocol.js';
import { InMemoryCatalog, serviceIdOfCheck } from '../../lib/testing/in-memory.catalog.js';
import type { InMemoryLocks } from '../../lib/testing/in-memory.locks.js';
import { InMemoryTransport } from '../../lib/testing/in-memory.transport.js';
import type { SimClock } from './sim-clock.js';

/**
 * The one Consul of a simulated world: the testing double's catalog and locks (sessions bound to
 * checks, lock-delay, `LockIndex`, blocking queries), plus what the double leaves out and the
 * faults need: a TTL check turns critical `ttl` after its last pass (which invalidates the
 * sessions bound to it), an agent restart loses an instance's registration, a member can be
 * held critical (flapping).
 */
export class SimConsul {
  readonly catalog = new InMemoryCatalog();
  readonly agent = new InMemoryTransport(this.catalog);
  private readonly expiry = new Map<string, NodeJS.Timeout>();
  private readonly expired = new Set<string>();
  private readonly flapped = new Set<string>();

  constructor(
    private readonly clock: SimClock,
    private readonly ttlMs: number,
  ) {}

  /** The KV locks (read directly by the invariants: Consul's truth, not an instance's view). */
  get locks(): InMemoryLocks {
    return (this.agent as unknown as { locks: InMemoryLocks }).locks;
  }

  /** A TTL pass (or a registration starting passing) reached the agent. */
  passed(serviceId: string): void {
    if (!this.catalog.has(serviceId)) return;
    this.expired.delete(serviceId);
    clearTimeout(this.expiry.get(serviceId));
    this.expiry.set(
      serviceId,
      this.clock.outside(() =>
        setTimeout(() => {
          this.expired.add(serviceId);
          this.refresh(serviceId);
        }, this.ttlMs),
      ),
    );
    this.refresh(serviceId);
  }

  /** The instance's agent restarted with its state lost: the registration is gone. */
  forget(serviceId: string): void {
    clearTimeout(this.expiry.get(serviceId));
    this.expired.delete(serviceId);
    this.catalog.deregister(serviceId);
  }

  deregistered(serviceId: string): void {
    clearTimeout(this.expiry.get(serviceId));
    this.expired.delete(serviceId);
  }

  /** Members flapping: held critical (whatever its passes say) while `critical`. */
  flap(serviceId: string, critical: boolean): void {
    if (critical) this.flapped.add(serviceId);
    else this.flapped.delete(serviceId);
    this.refresh(serviceId);
  }

  private refresh(serviceId: string): void {
    const passing = !this.expired.has(serviceId) && !this.flapped.has(serviceId);
    if (this.catalog.has(serviceId) && this.catalog.isPassing(serviceId) !== passing) {
      this.catalog.setPassing(serviceId, passing);
    }
  }
}

/** How one instance's requests travel; the faults change it while they last. */
export interface Network {
  /** A request reaches the agent after 0–20 ms; its answer comes back after 0–`maxDelayMs`. */
  maxDelayMs: number;
  /** Until then (virtual `performance.now()`), TTL passes are lost on the way. */
  losePassesUntil: number;
}

const NORMAL_DELAY_MS = 20;
const LOST_PASS_TIMEOUT_MS = 500;

/**
 * One instance's `ConsulTransport`: every request goes to the shared `SimConsul` after a short
 * delay (requests keep roughly their order, as on one agent), and every answer comes back after
 * another (long while the agent is slow), through fast-check's scheduler, which decides the
 * order of the answers due together. A request in flight when the client closes lands or is
 * lost (the seed decides); an answer for a stalled instance waits until it runs again.
 */
export class SimTransport implements ConsulTransport {
  readonly target = 'the simulated agent';
  readonly net: Network = { maxDelayMs: NORMAL_DELAY_MS, losePassesUntil: -1 };
  /** Sessions this instance created, in order. */
  readonly sessions: string[] = [];
  private readonly lifetime = new AbortController();

  constructor(
    readonly owner: string,
    private readonly consul: SimConsul,
    private readonly clock: SimClock,
    private readonly scheduler: Scheduler,
    private readonly random: () => number,
  ) {}

  get closeSignal(): AbortSignal {
    return this.lifetime.signal;
  }

  get closed(): boolean {
    return this.lifetime.signal.aborted;
  }

  /** Back to normal delays and no lost passes. */
  heal(): void {
    this.net.maxDelayMs = NORMAL_DELAY_MS;
    this.net.losePassesUntil = -1;
  }

  registerService(definition: AgentServiceDefinition): Promise<void> {
    return this.call('agent.service.register', async () => {
      await this.consul.agent.registerService(definition);
      const check = definition.check;
      if (check && 'ttl' in check && check.status === 'passing') this.consul.passed(definition.id);
    });
  }

  deregisterService(serviceId: string): Promise<void> {
    return this.call('agent.service.deregister', async () => {
      await this.consul.agent.deregisterService(serviceId);
      this.consul.deregistered(serviceId);
    });
  }

  passCheck(checkId: string): Promise<void> {
    return this.call('agent.check.pass', async () => {
      if (this.clock.now() < this.net.losePassesUntil) {
        await this.clock.delay(LOST_PASS_TIMEOUT_MS);
        throw new DiscoveryUnavailableError('Consul agent.check.pass timed out', 'ETIMEDOUT');
      }
      await this.consul.agent.passCheck(checkId);
      this.consul.passed(serviceIdOfCheck(checkId));
    });
  }

  hasLocalService(serviceId: string): Promise<boolean> {
    return this.call('agent.services', () => this.consul.agent.hasLocalService(serviceId));
  }

  localChecks(): Promise<LocalCheck[]> {
    return this.call('agent.checks', () => this.consul.agent.localChecks());
  }

  healthyInstances(name: string, options: ReadOptions = {}): Promise<ServiceInstance[]> {
    return this.call('health.service', () => this.consul.agent.healthyInstances(name, options));
  }

  watchHealthyInstances(
    name: string,
    options: BlockingReadOptions,
  ): Promise<IndexedResult<ServiceInstance[]>> {
    return this.call('health.service', () =>
      this.consul.agent.watchHealthyInstances(name, this.own(options)),
    );
  }

  watchCheckStates(options: BlockingReadOptions): Promise<IndexedResult<RawHealthCheck[]>> {
    return this.call('health.state', () => this.consul.agent.watchCheckStates(this.own(options)));
  }

  watchServiceNames(
    options: BlockingReadOptions,
  ): Promise<IndexedResult<Record<string, string[]>>> {
    return this.call('catalog.services', () =>
      this.consul.agent.watchServiceNames(this.own(options)),
    );
  }

  createSession(session: SessionDefinition): Promise<string> {
    return this.call('session.create', async () => {
      const id = await this.consul.agent.createSession(session);
      this.sessions.push(id);
      return id;
    });
  }

  destroySession(id: string): Promise<void> {
    return this.call('session.destroy', () => this.consul.agent.destroySession(id));
  }

  sessionExists(id: string, options: CallOptions = {}): Promise<boolean> {
    return this.call('session.info', () => this.consul.agent.sessionExists(id, options));
  }

  lock(key: string, session: string, value: string): Promise<LockAttempt> {
    return this.call('txn', () => this.consul.agent.lock(key, session, value));
  }

  unlock(key: string, session: string): Promise<boolean> {
    return this.call('kv.release', () => this.consul.agent.unlock(key, session));
  }

  watchPrefix(prefix: string, options: BlockingReadOptions): Promise<IndexedResult<LockEntry[]>> {
    return this.call('kv.get', () => this.consul.agent.watchPrefix(prefix, this.own(options)));
  }

  readKey(key: string, options: CallOptions = {}): Promise<KeyValue | undefined> {
    return this.call('kv.get', () => this.consul.agent.readKey(key, options));
  }

  writeFenced(write: FencedWrite): Promise<FencedWriteResult> {
    return this.call('txn', () => this.consul.agent.writeFenced(write));
  }

  close(): void {
    this.lifetime.abort();
  }

  /** The caller's signal and this client's lifetime: a long-poll ends with either. */
  private own<T extends CallOptions>(options: T): T {
    const signals = [this.lifetime.signal, ...(options.signal ? [options.signal] : [])];
    return { ...options, signal: AbortSignal.any(signals) };
  }

  private delayMs(max: number): number {
    return Math.floor(this.random() * (max + 1));
  }

  private call<T>(operation: string, apply: () => Promise<T>): Promise<T> {
    if (this.closed) {
      return Promise.reject(
        new DiscoveryUnavailableError(`Consul ${operation} refused: closed`, 'ECLOSED'),
      );
    }
    // A killed process sends nothing (its timers may still fire when stalls are not tracked).
    if (this.clock.isKilled(this.owner)) return new Promise<T>(() => undefined);
    return this.clock.outside(async () => {
      await this.clock.delay(this.delayMs(NORMAL_DELAY_MS));
      // Cancelled by close() while on the wire: the agent may or may not have read it.
      if (this.closed && this.random() < 0.5) throw aborted(operation);
      let outcome: { value: T } | { error: unknown };
      try {
        outcome = { value: await apply() };
      } catch (error) {
        outcome = { error };
      }
      await this.clock.delay(this.delayMs(this.net.maxDelayMs));
      await this.scheduler.schedule(Promise.resolve(), `${this.owner} ${operation}`);
      await this.clock.running(this.owner);
      if (this.closed) throw aborted(operation);
      if ('error' in outcome) throw outcome.error;
      return outcome.value;
    });
  }
}

function aborted(operation: string): DiscoveryUnavailableError {
  return new DiscoveryUnavailableError(
    `Consul ${operation} was aborted because the client is shutting down`,
    'EABORTED',
  );
}
