import { firstValueFrom, map, race, timer, type Subscription } from 'rxjs';
import { NoInstanceError } from '../errors/no-instance.error.js';
import { DiscoveryTimeoutError } from '../errors/discovery-timeout.error.js';
import type { ServiceInstance } from '../protocol/service-discovery.protocol.js';
import type { ServiceWatch } from '../watch/service-watch.js';
import type { WatchRegistry } from '../watch/watch.registry.js';

/**
 * Service name → its passing instances, from a watch the first call starts and keeps until
 * `close()`: the first request for a name waits for its first set (bounded by `timeoutMs`), every
 * later one is answered from memory.
 */
export class ServiceResolver {
  private readonly watches = new Map<string, ServiceWatch>();
  private readonly subscriptions: Subscription[] = [];

  /** `changed` hears the serviceIds passing in any resolved service, on every change. */
  constructor(
    private readonly registry: WatchRegistry,
    private readonly timeoutMs: number,
    private readonly changed: (passing: ReadonlySet<string>) => void,
  ) {}

  /** The passing set now; `undefined` until the watch (started here if need be) has one. */
  known(service: string): readonly ServiceInstance[] | undefined {
    return this.watch(service).snapshot;
  }

  /**
   * The passing set, waiting for the first one if need be. Rejects with `NoInstanceError` when
   * it is empty, and with the watch's cause when no set arrived within `timeoutMs`.
   */
  async instances(service: string): Promise<readonly ServiceInstance[]> {
    const watch = this.watch(service);
    const instances =
      watch.snapshot ??
      (await firstValueFrom(
        race(
          watch.instances$,
          timer(this.timeoutMs).pipe(map((): readonly ServiceInstance[] | undefined => undefined)),
        ),
      ));
    if (!instances) {
      throw watch.failure instanceof Error
        ? watch.failure
        : new DiscoveryTimeoutError(`health.service ${service}`, this.timeoutMs);
    }
    if (instances.length === 0) throw new NoInstanceError(service);
    return instances;
  }

  close(): void {
    for (const subscription of this.subscriptions.splice(0)) subscription.unsubscribe();
    for (const watch of this.watches.values()) this.registry.release(watch);
    this.watches.clear();
  }

  private watch(service: string): ServiceWatch {
    let watch = this.watches.get(service);
    if (!watch) {
      watch = this.registry.acquire(service, {});
      this.watches.set(service, watch);
      this.subscriptions.push(watch.instances$.subscribe(() => this.changed(this.passingIds())));
    }
    return watch;
  }

  private passingIds(): Set<string> {
    const ids = new Set<string>();
    for (const watch of this.watches.values()) {
      for (const instance of watch.snapshot ?? []) ids.add(instance.serviceId);
    }
    return ids;
  }
}
