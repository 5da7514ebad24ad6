import {
  type BeforeApplicationShutdown,
  Inject,
  Injectable,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
} from '@nestjs/common';
import { map, Observable } from 'rxjs';
import type { LocalCheck } from './consul/consul.client.js';
import type { ConsulTransport } from './consul/consul.transport.js';
import { CONSUL_CLIENT, DISCOVERY_SETTINGS } from './discovery.constants.js';
import type {
  DiscoveryQuery,
  ServiceInstance,
  ServiceRegistration,
} from './protocol/service-discovery.protocol.js';
import { ConsulDiscoveryProvider } from './provider/consul-discovery.provider.js';
import type { DiscoveryStatus } from './registration/registration-status.js';
import { SelfRegistration } from './registration/self-registration.js';
import { ShardingService } from './sharding/sharding.service.js';
import { DiscoveryHttpClient } from './http/discovery-http.client.js';
import { withDeadline } from './resilience/with-deadline.js';
import { DiscoverySettings } from './settings/discovery.settings.js';
import { checkDiscoverQuery } from './protocol/service-discovery.arguments.js';
import type { Freshness } from './watch/service-watch.js';
import { WatchRegistry } from './watch/watch.registry.js';

/**
 * The public face of the module, and the order of its teardown: Nest runs one phase's hooks of
 * all providers in parallel, so this one provider sequences sharding, self-registration, the HTTP
 * client's sockets, watches and the Consul client, all within `shutdownTimeoutMs`.
 */
@Injectable()
export class DiscoveryService
  implements OnApplicationBootstrap, BeforeApplicationShutdown, OnApplicationShutdown
{
  private readonly prewarmed: { unsubscribe(): void }[] = [];
  private shutdownDeadline?: number;
  /** Counts `registerSelf()` / `deregisterSelf()` calls: the last one called decides. */
  private selfCalls = 0;

  constructor(
    @Inject(DISCOVERY_SETTINGS) private readonly settings: DiscoverySettings,
    @Inject(CONSUL_CLIENT) private readonly client: ConsulTransport,
    private readonly provider: ConsulDiscoveryProvider,
    private readonly watches: WatchRegistry,
    private readonly registration: SelfRegistration,
    private readonly sharding: ShardingService,
    private readonly http: DiscoveryHttpClient,
  ) {}

  /** This instance's registration, as sent to Consul. */
  get self(): ServiceRegistration {
    return this.registration.self;
  }

  async onApplicationBootstrap(): Promise<void> {
    if (!this.settings.enabled) return;
    for (const name of this.settings.watch.services) {
      this.prewarmed.push(this.watch(name).subscribe());
    }
    if (this.settings.autoRegister) await this.registration.boot();
    this.sharding.start();
  }

  /**
   * Registers this instance (TTL check starting passing) and starts its heartbeat; exclusive
   * sharding resumes owning partitions (unless `deregisterSelf()` was called since).
   */
  async registerSelf(): Promise<boolean> {
    const call = ++this.selfCalls;
    const registered = await this.registration.register();
    if (registered && call === this.selfCalls) this.sharding.restore();
    return registered;
  }

  /**
   * Stops the heartbeat and deregisters; once `true`, nothing registers it again until
   * `registerSelf()`. Exclusive sharding first drains and releases its locks (`owns()` is false
   * from the call on): deregistering first would put every partition through the lock-delay. A
   * `registerSelf()` called meanwhile comes later and wins: this one then resolves `false`.
   */
  async deregisterSelf(): Promise<boolean> {
    const call = ++this.selfCalls;
    const withdrawing = this.sharding.withdraw();
    if (withdrawing) {
      await withdrawing;
      if (call !== this.selfCalls) return false;
    }
    return this.registration.deregister();
  }

  discover(name: string, query?: DiscoveryQuery): Promise<ServiceInstance[]> {
    return this.provider.discover(name, query);
  }

  /**
   * The passing set of `name`: at once when known, then on every real change. All subscribers
   * of one name + query share one blocking query; the last unsubscribe ends it.
   */
  watch(name: string, query?: DiscoveryQuery): Observable<ServiceInstance[]> {
    const checked = checkDiscoverQuery(name, query);
    return new Observable<readonly ServiceInstance[]>((subscriber) => {
      const watch = this.watches.acquire(name, checked);
      const subscription = watch.instances$.subscribe(subscriber);
      return () => {
        subscription.unsubscribe();
        this.watches.release(watch);
      };
    }).pipe(map((instances) => instances.slice()));
  }

  /** The watched set, synchronously; `undefined` when name + query is not watched (yet). */
  snapshot(name: string, query?: DiscoveryQuery): ServiceInstance[] | undefined {
    return this.watches.find(name, checkDiscoverQuery(name, query))?.snapshot?.slice();
  }

  /** When the watched set was last confirmed by Consul, and whether the last attempt failed. */
  freshness(name: string, query?: DiscoveryQuery): Freshness | undefined {
    return this.watches.find(name, checkDiscoverQuery(name, query))?.freshness;
  }

  /**
   * For a health endpoint: whether the agent answers (one local read, bounded by
   * `consul.timeoutMs`) and where this instance's registration stands. Never rejects.
   */
  async status(): Promise<DiscoveryStatus> {
    let held: boolean | undefined;
    let checks: LocalCheck[] | undefined;
    let agent: DiscoveryStatus['agent'] = { ok: true };
    const serviceId = this.registration.serviceId;
    try {
      // The agent's local services: the ping and the answer to "held?" in one read (with no
      // service configured, any id does for the ping); its checks: Consul's view of self.
      [held, checks] = await Promise.all([
        this.client.hasLocalService(serviceId ?? ''),
        serviceId === undefined ? undefined : this.client.localChecks(),
      ]);
    } catch (error) {
      agent = { ok: false, error: error instanceof Error ? error.message : String(error) };
    }
    const self = this.registration.status(held, checks);
    return self ? { agent, self } : { agent };
  }

  /**
   * Partition handlers drained and locks released first (deregistering first would invalidate
   * the sharding session), then deregister while the HTTP server (closed after this phase) still
   * drains traffic.
   */
  async beforeApplicationShutdown(): Promise<void> {
    const deadline = this.deadline();
    await this.sharding.stop(deadline);
    await this.registration.stop(deadline);
  }

  /** The guarantee (the same teardown, awaited), then HTTP sockets, watches, the client. */
  async onApplicationShutdown(): Promise<void> {
    this.http.stop();
    const deadline = this.deadline();
    await this.sharding.stop(deadline);
    await this.registration.stop(deadline);
    await withDeadline(this.http.close(), deadline - Date.now());
    await withDeadline(this.watches.closeAll(), deadline - Date.now());
    this.client.close();
  }

  /** Fixed by the first shutdown hook: the whole teardown fits in `shutdownTimeoutMs`. */
  private deadline(): number {
    if (this.shutdownDeadline === undefined) {
      this.shutdownDeadline = Date.now() + this.settings.shutdownTimeoutMs;
      for (const subscription of this.prewarmed.splice(0)) subscription.unsubscribe();
    }
    return this.shutdownDeadline;
  }
}
