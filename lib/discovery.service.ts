import {
  type BeforeApplicationShutdown,
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
} from '@nestjs/common';
import { map, Observable } from 'rxjs';
import { serviceCheckId, type RegistrationFields } from './consul/agent-definition.js';
import { ConsulClient } from './consul/consul.client.js';
import { ConsulDiscoveryProvider } from './consul/consul-discovery.provider.js';
import { CONSUL_CLIENT, DISCOVERY_SETTINGS } from './discovery.constants.js';
import { ConsulResponseError } from './errors/consul-response.error.js';
import { DiscoverySettingsError } from './errors/discovery-settings.error.js';
import { selfNotConfiguredMessage } from './errors/error-messages.js';
import type {
  DiscoveryQuery,
  ServiceInstance,
  ServiceRegistration,
} from './protocol/service-discovery.protocol.js';
import { DiscoverySettings } from './settings/discovery.settings.js';
import { parseDuration } from './protocol/duration.util.js';
import { checkDiscoverQuery } from './protocol/service-discovery.arguments.js';
import type { Freshness } from './watch/service-watch.js';
import { WatchRegistry } from './watch/watch.registry.js';

/** 1.8 answers a pass for an unknown check with 500 "does not have associated TTL"; newer, 404. */
function isUnknownCheck(error: unknown): boolean {
  return (
    error instanceof ConsulResponseError &&
    (error.status === 404 ||
      (error.status === 500 &&
        /does not have associated TTL|unknown check/i.test(error.consulMessage)))
  );
}

const withDeadline = <T>(work: Promise<T>, ms: number): Promise<T | undefined> =>
  new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), Math.max(0, ms));
    timer.unref();
    work
      .then(
        (value) => resolve(value),
        () => resolve(undefined),
      )
      .finally(() => clearTimeout(timer));
  });

/**
 * The lifecycle owner: registers this instance at bootstrap, keeps its TTL check passing (and
 * re-registers after an agent restart), serves watches, and tears everything down in order at
 * shutdown within `shutdownTimeoutMs`.
 */
@Injectable()
export class DiscoveryService
  implements OnApplicationBootstrap, BeforeApplicationShutdown, OnApplicationShutdown
{
  private readonly logger = new Logger(DiscoveryService.name);
  private readonly registration?: RegistrationFields;
  private registered = false;
  private shuttingDown = false;
  private shutdownDeadline = 0;
  private heartbeatTimer?: NodeJS.Timeout;
  private heartbeatInFlight?: Promise<void>;
  private heartbeatFailing = false;
  private background?: Promise<void>;
  private readonly prewarmed: { unsubscribe(): void }[] = [];
  /** Aborted when shutdown begins: the background registration stops retrying. */
  private readonly lifecycle = new AbortController();

  constructor(
    @Inject(DISCOVERY_SETTINGS) private readonly settings: DiscoverySettings,
    @Inject(CONSUL_CLIENT) private readonly client: ConsulClient,
    private readonly provider: ConsulDiscoveryProvider,
    private readonly watches: WatchRegistry,
  ) {
    const { service, healthCheck } = settings;
    if (service.name !== undefined && service.port !== undefined && service.id !== undefined) {
      this.registration = {
        name: service.name,
        serviceId: service.id,
        port: service.port,
        address: service.address,
        tags: service.tags,
        meta: service.meta,
        healthCheck,
      };
    }
  }

  /** This instance's registration, as sent to Consul. */
  get self(): ServiceRegistration {
    const r = this.requireRegistration();
    const self: ServiceRegistration = {
      name: r.name,
      serviceId: r.serviceId,
      port: r.port,
      tags: [...r.tags],
      meta: { ...r.meta },
      healthCheck: { ...r.healthCheck } as ServiceRegistration['healthCheck'],
    };
    if (r.address !== undefined) self.address = r.address;
    return self;
  }

  async onApplicationBootstrap(): Promise<void> {
    if (!this.settings.enabled) return;
    for (const name of this.settings.watch.services) {
      this.prewarmed.push(this.watch(name).subscribe());
    }
    if (!this.settings.autoRegister) return;
    if (this.settings.retry.failFast) {
      await this.registerSelfOrThrow(this.settings.retry.maxAttempts);
      return;
    }
    try {
      await this.registerSelfOrThrow(1);
    } catch (error) {
      this.logger.warn(
        `Registration of "${this.registration?.serviceId}" failed, retrying in the background: ${(error as Error).message}`,
      );
      this.background = this.registerInBackground();
    }
  }

  /** Registers this instance (TTL check starting passing) and starts its heartbeat. */
  async registerSelf(): Promise<boolean> {
    const r = this.requireRegistration();
    try {
      await this.registerSelfOrThrow(this.settings.retry.maxAttempts);
      return true;
    } catch (error) {
      this.logger.warn(`Could not register "${r.serviceId}": ${(error as Error).message}`);
      return false;
    }
  }

  /** Stops the heartbeat and deregisters this instance (already gone counts as success). */
  async deregisterSelf(): Promise<boolean> {
    const r = this.requireRegistration();
    this.stopHeartbeat();
    try {
      await this.provider.deregisterOrThrow(r.serviceId);
      this.registered = false;
      this.logger.log(`Deregistered "${r.serviceId}"`);
      return true;
    } catch (error) {
      this.logger.warn(`Could not deregister "${r.serviceId}": ${(error as Error).message}`);
      return false;
    }
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

  /** Stop the heartbeat, then deregister while the HTTP server still drains traffic. */
  async beforeApplicationShutdown(): Promise<void> {
    this.beginShutdown();
    await this.deregisterIfRegistered();
  }

  /** The guarantee: deregister if still registered, then end watches and close the client. */
  async onApplicationShutdown(): Promise<void> {
    this.beginShutdown();
    await this.deregisterIfRegistered();
    await withDeadline(this.watches.closeAll(), this.remainingMs());
    this.client.close();
    await withDeadline(
      Promise.allSettled([this.background, this.heartbeatInFlight]),
      this.remainingMs(),
    );
  }

  private beginShutdown(): void {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    this.shutdownDeadline = Date.now() + this.settings.shutdownTimeoutMs;
    this.lifecycle.abort();
    this.stopHeartbeat();
    for (const subscription of this.prewarmed.splice(0)) subscription.unsubscribe();
  }

  private remainingMs(): number {
    return this.shutdownDeadline - Date.now();
  }

  private async deregisterIfRegistered(): Promise<void> {
    const r = this.registration;
    if (!r) return;
    // A heartbeat or background registration in flight may be registering: let it land first
    // so that nothing it registers outlives the app.
    await withDeadline(
      Promise.allSettled([this.heartbeatInFlight, this.background]),
      this.remainingMs(),
    );
    if (!this.registered) return;
    const done = await withDeadline(
      this.provider.deregisterOrThrow(r.serviceId).then(() => true),
      this.remainingMs(),
    );
    if (done) {
      this.registered = false;
      this.logger.log(`Deregistered "${r.serviceId}"`);
    } else {
      this.logger.warn(`Could not deregister "${r.serviceId}" within shutdownTimeoutMs`);
    }
  }

  private async registerSelfOrThrow(attempts: number): Promise<void> {
    const r = this.requireRegistration();
    await this.provider.registerOrThrow(r, true, { attempts });
    this.onRegistered(r);
  }

  private async registerInBackground(): Promise<void> {
    const r = this.requireRegistration();
    try {
      await this.provider.registerOrThrow(r, true, {
        attempts: Infinity,
        signal: this.lifecycle.signal,
        retryRefusals: true,
      });
      this.onRegistered(r);
    } catch (error) {
      if (!this.shuttingDown)
        this.logger.error(`Registration of "${r.serviceId}" stopped: ${(error as Error).message}`);
    }
  }

  /** Also while shutting down, so the teardown deregisters what landed late. */
  private onRegistered(r: RegistrationFields): void {
    this.registered = true;
    this.logger.log(`Registered "${r.serviceId}" (${r.name}) with Consul at ${this.client.target}`);
    this.scheduleHeartbeat();
  }

  /**
   * Every `intervalRatio × ttl` (TTL check: a pass) or `intervalRatio × interval` (HTTP/TCP
   * check, or none: a look at the agent's local services), on its own timer. Either way a lost
   * registration (agent restarted) is repaired within one beat.
   */
  private scheduleHeartbeat(): void {
    if (this.shuttingDown) return;
    clearTimeout(this.heartbeatTimer);
    const check = this.registration?.healthCheck;
    const periodMs = parseDuration(check && 'ttl' in check ? check.ttl : check?.interval) ?? 10_000;
    const everyMs = Math.max(50, Math.floor(periodMs * this.settings.heartbeat.intervalRatio));
    this.heartbeatTimer = setTimeout(() => {
      this.heartbeatInFlight = this.beat().finally(() => {
        this.heartbeatInFlight = undefined;
        this.scheduleHeartbeat();
      });
    }, everyMs);
    // The heartbeat must never be what keeps a process alive.
    this.heartbeatTimer.unref();
  }

  private async beat(): Promise<void> {
    const r = this.requireRegistration();
    let lost: boolean;
    try {
      lost = !(await this.confirmRegistered(r));
      if (this.heartbeatFailing) this.logger.log(`Heartbeat of "${r.serviceId}" recovered`);
      this.heartbeatFailing = false;
    } catch (error) {
      if (this.shuttingDown) return;
      lost = isUnknownCheck(error);
      // Logged once per outage, not once per beat.
      if (!lost && !this.heartbeatFailing) {
        this.logger.warn(`Heartbeat of "${r.serviceId}" failed: ${(error as Error).message}`);
      }
      this.heartbeatFailing = !lost;
    }
    if (!lost || this.shuttingDown) return;
    this.logger.warn(`Consul lost "${r.serviceId}" (agent restarted?); registering it again`);
    try {
      await this.provider.registerOrThrow(r, true, { attempts: 1 });
    } catch (error) {
      this.logger.warn(`Re-registration of "${r.serviceId}" failed: ${(error as Error).message}`);
    }
  }

  /** TTL: the pass itself (an unknown check rejects); otherwise: is it among the local services? */
  private async confirmRegistered(r: RegistrationFields): Promise<boolean> {
    if (r.healthCheck && 'ttl' in r.healthCheck) {
      await this.client.passCheck(serviceCheckId(r.serviceId));
      return true;
    }
    return this.client.hasLocalService(r.serviceId);
  }

  private stopHeartbeat(): void {
    clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }

  private requireRegistration(): RegistrationFields {
    if (!this.registration) {
      throw new DiscoverySettingsError([
        { path: 'service.name', reasons: [selfNotConfiguredMessage()] },
      ]);
    }
    return this.registration;
  }
}
