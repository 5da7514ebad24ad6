import { serviceCheckId } from '../consul/agent-definition.js';
import type { RawHealthCheck } from '../consul/consul.types.js';
import type { DiscoveryQuery, ServiceInstance } from '../protocol/service-discovery.protocol.js';

/** `service:<id>` (`serviceCheckId`) → `<id>`; `''` for any other check. */
export function serviceIdOfCheck(checkId: string): string {
  const prefix = serviceCheckId('');
  return checkId.startsWith(prefix) ? checkId.slice(prefix.length) : '';
}

/** The node every in-memory instance sits on, unless the test names another. */
export const IN_MEMORY_NODE = 'in-memory';

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
 * the names it touched remember it, so a blocking query on a name wakes only for that name. Pure
 * state; `onChange` listeners are how blocking queries wake (no timers here).
 */
export class InMemoryCatalog {
  private readonly entries = new Map<string, Entry>();
  private readonly nameIndexes = new Map<string, number>();
  private lastIndex = 1;
  private readonly listeners = new Set<() => void>();

  /** The index of the whole catalog (check states and service names). */
  get index(): number {
    return this.lastIndex;
  }

  /** The index of `name`'s instances: the last change that touched them (1 if none yet). */
  indexOf(name: string): number {
    return this.nameIndexes.get(name) ?? 1;
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
      if (entry.origin === 'declared' && entry.instance.name === name) this.entries.delete(id);
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
    this.commit(touched);
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
    this.commit(new Set([instance.name, ...(previous ? [previous.instance.name] : [])]));
  }

  /** Removes the instance; `false` when there was none. */
  deregister(serviceId: string): boolean {
    const entry = this.entries.get(serviceId);
    if (!entry) return false;
    this.entries.delete(serviceId);
    this.commit(new Set([entry.instance.name]));
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
    for (const entry of this.entries.values()) {
      const { instance } = entry;
      if (instance.name !== name || !isPassing(entry)) continue;
      if (query.tag !== undefined && !instance.tags.includes(query.tag)) continue;
      if (query.datacenter !== undefined && instance.datacenter !== query.datacenter) continue;
      found.push(copy(instance));
    }
    return found.sort((a, b) =>
      a.serviceId < b.serviceId ? -1 : a.serviceId > b.serviceId ? 1 : 0,
    );
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

  /** Records a change (of `names`' instances, or none: the KV store) and wakes the listeners. */
  commit(names: ReadonlySet<string> = new Set()): void {
    this.lastIndex++;
    for (const name of names) this.nameIndexes.set(name, this.lastIndex);
    for (const listener of [...this.listeners]) listener();
  }
}

function isPassing(entry: Entry): boolean {
  return entry.checkPassing && !entry.held;
}

function copy(instance: ServiceInstance): ServiceInstance {
  return { ...instance, tags: [...instance.tags], meta: { ...instance.meta } };
}
