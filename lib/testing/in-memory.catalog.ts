import { serviceCheckId } from '../consul/agent-definition.js';
import { LOCAL_DATACENTER } from '../consul/consul.client.js';
import type { RawHealthCheck } from '../consul/consul.types.js';
import type { DiscoveryQuery, ServiceInstance } from '../protocol/service-discovery.protocol.js';

/** `service:<id>` (`serviceCheckId`) → `<id>`; `''` for any other check. */
export function serviceIdOfCheck(checkId: string): string {
  const prefix = serviceCheckId('');
  return checkId.startsWith(prefix) ? checkId.slice(prefix.length) : '';
}

/** The node every in-memory instance sits on, unless the test names another. */
export const IN_MEMORY_NODE = 'in-memory';

/** The double's own datacenter unless `forRoot({ datacenter })` names another: a dev agent's. */
export const IN_MEMORY_DATACENTER = 'dc1';

/** Consul matches service names and tags case-insensitively. */
const folded = (text: string): string => text.toLowerCase();

/**
 * How an instance came in: `declared` by the test (`services`, `setInstances`: no check of its
 * own, passing until `setPassing(id, false)`), or registered through the agent (`register()`,
 * self-registration: its check starts as the definition says and a TTL pass makes it passing).
 */
type Origin = 'declared' | 'agent';

interface Entry {
  instance: ServiceInstance;
  origin: Origin;
  /** The agent can pass it (`PUT /v1/agent/check/pass/service:<id>`). */
  ttl: boolean;
  /** Its own check's status. */
  checkPassing: boolean;
  /** `setPassing(id, false)`: critical whatever its check says, until `setPassing(id, true)`. */
  held: boolean;
}

/**
 * The membership of the in-memory double, with Consul's raft-like indexes: every change bumps
 * one index (shared with the KV locks of `in-memory.locks.ts`, as Consul's raft index is), and
 * the names it touched remember it, so a blocking query on a name wakes only for that name; the
 * service list's own index moves on registrations only, not on check changes, as Consul's
 * `/v1/catalog/services` does. Names and tags match case-insensitively; instances naming no
 * datacenter are in the local one. Pure state; `onChange` listeners are how blocking queries
 * wake (no timers here).
 */
export class InMemoryCatalog {
  private readonly entries = new Map<string, Entry>();
  /** By folded name. */
  private readonly nameIndexes = new Map<string, number>();
  private lastIndex = 1;
  private lastRegistrationIndex = 1;
  private readonly listeners = new Set<() => void>();

  constructor(readonly localDatacenter: string = IN_MEMORY_DATACENTER) {}

  /** The index of the whole catalog (check states and service names). */
  get index(): number {
    return this.lastIndex;
  }

  /** The index of `name`'s instances: the last change that touched them (1 if none yet). */
  indexOf(name: string): number {
    return this.nameIndexes.get(folded(name)) ?? 1;
  }

  /** The index of the service list: the last registration, deregistration or declaration. */
  get registrationIndex(): number {
    return this.lastRegistrationIndex;
  }

  /** Consul answers for its own datacenter and the ones it has a path to (here: declared). */
  knowsDatacenter(datacenter: string): boolean {
    if (this.named(datacenter) === this.localDatacenter) return true;
    return [...this.entries.values()].some((e) => e.instance.datacenter === datacenter);
  }

  /** Called after every change; returns the unsubscribe. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The declared instances of `name` become exactly these; agent registrations stay. */
  declare(name: string, instances: readonly ServiceInstance[]): void {
    const touched = new Set([name]);
    // An instance declared again keeps what setPassing() said of it.
    const held = new Set<string>();
    for (const [id, entry] of this.entries) {
      if (entry.held) held.add(id);
      if (entry.origin === 'declared' && folded(entry.instance.name) === folded(name)) {
        this.entries.delete(id);
      }
    }
    for (const instance of instances) {
      const previous = this.entries.get(instance.serviceId);
      if (previous) touched.add(previous.instance.name);
      this.entries.set(instance.serviceId, {
        instance: copy(instance),
        origin: 'declared',
        ttl: false,
        checkPassing: true,
        held: held.has(instance.serviceId),
      });
    }
    this.commit(touched, true);
  }

  /** An agent registration (replaces one with the same id, as the agent does). */
  register(instance: ServiceInstance, check: { ttl: boolean; passing: boolean }): void {
    const previous = this.entries.get(instance.serviceId);
    this.entries.set(instance.serviceId, {
      instance: copy(instance),
      origin: 'agent',
      ttl: check.ttl,
      checkPassing: check.passing,
      held: previous?.held ?? false,
    });
    this.commit(new Set([instance.name, ...(previous ? [previous.instance.name] : [])]), true);
  }

  /** Removes the instance; `false` when there was none. */
  deregister(serviceId: string): boolean {
    const entry = this.entries.get(serviceId);
    if (!entry) return false;
    this.entries.delete(serviceId);
    this.commit(new Set([entry.instance.name]), true);
    return true;
  }

  /** A TTL pass; `false` when no instance has that TTL check. */
  pass(serviceId: string): boolean {
    const entry = this.entries.get(serviceId);
    if (!entry?.ttl) return false;
    if (!entry.checkPassing) {
      entry.checkPassing = true;
      this.commit(new Set([entry.instance.name]));
    }
    return true;
  }

  /** `false` when the instance is unknown. */
  setPassing(serviceId: string, passing: boolean): boolean {
    const entry = this.entries.get(serviceId);
    if (!entry) return false;
    const before = isPassing(entry);
    entry.held = !passing;
    if (passing) entry.checkPassing = true;
    if (isPassing(entry) !== before) this.commit(new Set([entry.instance.name]));
    return true;
  }

  has(serviceId: string): boolean {
    return this.entries.has(serviceId);
  }

  /** Whether the instance is passing; `undefined` when it is unknown. */
  isPassing(serviceId: string): boolean | undefined {
    const entry = this.entries.get(serviceId);
    return entry && isPassing(entry);
  }

  /** Passing instances of `name` matching `query`, sorted by `serviceId`, as fresh copies. */
  passing(name: string, query: DiscoveryQuery = {}): ServiceInstance[] {
    const found: ServiceInstance[] = [];
    const tag = query.tag === undefined ? undefined : folded(query.tag);
    for (const entry of this.entries.values()) {
      const { instance } = entry;
      if (folded(instance.name) !== folded(name) || !isPassing(entry)) continue;
      if (tag !== undefined && !instance.tags.some((t) => folded(t) === tag)) continue;
      const datacenter = instance.datacenter ?? this.localDatacenter;
      if (query.datacenter !== undefined && datacenter !== this.named(query.datacenter)) continue;
      found.push(copy(instance));
    }
    return found.sort((a, b) =>
      a.serviceId < b.serviceId ? -1 : a.serviceId > b.serviceId ? 1 : 0,
    );
  }

  /** A query's datacenter by name: `LOCAL_DATACENTER` is the local one. */
  private named(datacenter: string): string {
    return datacenter === LOCAL_DATACENTER ? this.localDatacenter : datacenter;
  }

  /** Every instance's check, as `/v1/health/state/any` lists them. */
  checks(): RawHealthCheck[] {
    return [...this.entries.values()].map((entry) => ({
      Node: entry.instance.node,
      CheckID: serviceCheckId(entry.instance.serviceId),
      Status: isPassing(entry) ? 'passing' : 'critical',
      ServiceID: entry.instance.serviceId,
      ServiceName: entry.instance.name,
    }));
  }

  /** Service names and their tags, as `/v1/catalog/services` lists them. */
  serviceNames(): Record<string, string[]> {
    const names: Record<string, string[]> = {};
    for (const { instance } of this.entries.values()) {
      names[instance.name] = [...new Set([...(names[instance.name] ?? []), ...instance.tags])];
    }
    return names;
  }

  /**
   * Records a change (of `names`' instances, or none: the KV store; `registration` when the
   * service list changed) and wakes the listeners.
   */
  commit(names: ReadonlySet<string> = new Set(), registration = false): void {
    this.lastIndex++;
    if (registration) this.lastRegistrationIndex = this.lastIndex;
    for (const name of names) this.nameIndexes.set(folded(name), this.lastIndex);
    for (const listener of [...this.listeners]) listener();
  }
}

function isPassing(entry: Entry): boolean {
  return entry.checkPassing && !entry.held;
}

function copy(instance: ServiceInstance): ServiceInstance {
  return { ...instance, tags: [...instance.tags], meta: { ...instance.meta } };
}
