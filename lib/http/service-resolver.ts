import { filter, firstValueFrom, map, race, timer, type Subscription } from 'rxjs';
import { DiscoveryError } from '../errors/discovery.error.js';
import { DiscoveryTimeoutError } from '../errors/discovery-timeout.error.js';
import { DiscoveryUnavailableError } from '../errors/discovery-unavailable.error.js';
import { clientStoppedMessage } from '../errors/error-messages.js';
import { NoInstanceError } from '../errors/no-instance.error.js';
import type { ServiceInstance } from '../protocol/service-discovery.protocol.js';
import type { ServiceWatch } from '../watch/service-watch.js';
import type { WatchRegistry } from '../watch/watch.registry.js';
import { instanceKey } from './instance-key.js';
import type { RetryBudget } from './retry-budget.js';

export interface ResolverOptions {
  /** Bound on the wait for a name's first set. */
  timeoutMs: number;
  /** A name's watch is released after this long without a call for it. */
  idleWatchMs: number;
  /** A retry budget for a name that comes into use. */
  newBudget: () => RetryBudget;
  /** Hears the keys (instance-key.ts) passing in any resolved service, on every change. */
  changed: (passing: ReadonlySet<string>) => void;
}

/** A name in use: its watch subscription and its own retry budget. */
export interface ResolvedName {
  readonly watch: ServiceWatch;
  readonly budget: RetryBudget;
  readonly subscription: Subscription;
  /** The sweep generation it was last used in. */
  usedIn: number;
}

/**
 * Service name → its passing instances, from a watch the first call starts and releases after
 * `idleWatchMs` without a call: the first request for a name waits for its first set (bounded by
 * `timeoutMs`, cut short by a transport failure), every later one is answered from memory. Once
 * `stop()` was called it refuses every name and starts nothing.
 */
export class ServiceResolver {
  private readonly names = new Map<string, ResolvedName>();
  private generation = 0;
  private sweeper?: NodeJS.Timeout;
  private stopped = false;

  constructor(
    private readonly registry: WatchRegistry,
    private readonly options: ResolverOptions,
  ) {}

  /** The state of `service`, its watch started if need be; throws once stopped. */
  resolve(service: string): ResolvedName {
    let name = this.names.get(service);
    if (!name) {
      if (this.stopped) throw new DiscoveryError(clientStoppedMessage(service));
      const watch = this.registry.acquire(service, {});
      name = {
        watch,
        budget: this.options.newBudget(),
        subscription: watch.instances$.subscribe(() => this.options.changed(this.passingKeys())),
        usedIn: this.generation,
      };
      this.names.set(service, name);
      this.sweeper ??= this.startSweeper();
    }
    name.usedIn = this.generation;
    return name;
  }

  /** The passing set now; `undefined` until the watch (started here if need be) has one. */
  known(service: string): readonly ServiceInstance[] | undefined {
    if (this.stopped) return undefined;
    return this.resolve(service).watch.snapshot;
  }

  /**
   * The passing set, waiting for the first one if need be. Rejects with `NoInstanceError` when
   * it is empty, and with the watch's cause when no set arrived within `timeoutMs` or the watch
   * failed to reach Consul before it had one.
   */
  async instances(service: string): Promise<readonly ServiceInstance[]> {
    const { watch } = this.resolve(service);
    const instances =
      watch.snapshot ??
      (failedToReach(watch)
        ? undefined
        : await firstValueFrom(
            race(
              watch.instances$,
              timer(this.options.timeoutMs).pipe(map(() => undefined)),
              watch.failures$.pipe(
                filter(() => failedToReach(watch)),
                map(() => undefined),
              ),
            ),
          ));
    if (!instances) {
      throw watch.failure instanceof Error
        ? watch.failure
        : new DiscoveryTimeoutError(`health.service ${service}`, this.options.timeoutMs);
    }
    if (instances.length === 0) throw new NoInstanceError(service);
    return instances;
  }

  /** From now on every name is refused at once and nothing is started. */
  stop(): void {
    this.stopped = true;
  }

  /** Stops and releases every watch. */
  close(): void {
    this.stop();
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    for (const service of [...this.names.keys()]) this.release(service);
  }

  private startSweeper(): NodeJS.Timeout {
    // A name unused for two whole periods has been idle at least idleWatchMs.
    const sweeper = setInterval(() => this.sweep(), this.options.idleWatchMs / 2);
    sweeper.unref();
    return sweeper;
  }

  private sweep(): void {
    this.generation++;
    for (const [service, name] of this.names) {
      if (this.generation - name.usedIn > 2) this.release(service);
    }
    if (this.names.size === 0) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
    this.options.changed(this.passingKeys());
  }

  private release(service: string): void {
    const name = this.names.get(service);
    if (!name) return;
    this.names.delete(service);
    name.subscription.unsubscribe();
    this.registry.release(name.watch);
  }

  private passingKeys(): Set<string> {
    const keys = new Set<string>();
    for (const { watch } of this.names.values()) {
      for (const instance of watch.snapshot ?? []) keys.add(instanceKey(instance));
    }
    return keys;
  }
}

/** The watch has no set and its last attempt failed to reach Consul. */
function failedToReach(watch: ServiceWatch): boolean {
  return watch.snapshot === undefined && watch.failure instanceof DiscoveryUnavailableError;
}
