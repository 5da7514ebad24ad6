import { Inject, Injectable, Optional } from '@nestjs/common';
import type { ConsulTransport } from '../consul/consul.transport.js';
import { CONSUL_CLIENT, DISCOVERY_SETTINGS } from '../discovery.constants.js';
import { DiscoveryMetrics } from '../metrics/discovery.metrics.js';
import type { DiscoveryQuery } from '../protocol/service-discovery.protocol.js';
import { DiscoverySettings } from '../settings/discovery.settings.js';
import { ChangeFeed } from './change-feed.js';
import { ServiceWatch, type ServiceWatchOptions } from './service-watch.js';
import { datacenterKey, watchKey } from './watch-key.js';

/**
 * Every live watch, shared by name + query. The first `watch.maxLongPolls` get a long-poll each;
 * names beyond share one change feed per datacenter, so connections stay bounded. A long-poll
 * whose last subscriber left is not aborted (a 1.8 agent would hold it until its wait ends)
 * but left to end by itself, still taking its slot, and reused by a subscriber
 * that comes back meanwhile; only `closeAll()` aborts.
 */
@Injectable()
export class WatchRegistry {
  /** Watches with subscribers. */
  private readonly watches = new Map<string, ServiceWatch>();
  /** Long-polls whose last subscriber left, until they end. */
  private readonly idle = new Map<string, ServiceWatch>();
  /** Long-polls open or idle: the slots of `watch.maxLongPolls`. */
  private readonly polling = new Set<ServiceWatch>();
  private readonly feeds = new Map<string, ChangeFeed>();
  private readonly options: ServiceWatchOptions;
  private readonly maxLongPolls: number;

  constructor(
    @Inject(DISCOVERY_SETTINGS) settings: DiscoverySettings,
    @Inject(CONSUL_CLIENT) private readonly client: ConsulTransport,
    @Optional() metrics: DiscoveryMetrics = DiscoveryMetrics.noop,
  ) {
    metrics.observeWatches(() => this.watches.values());
    const { watch, retry } = settings;
    this.maxLongPolls = watch.maxLongPolls;
    this.options = {
      waitMs: watch.waitMs,
      consistency: watch.consistency,
      rateLimit: watch.rateLimit,
      backoff: { initialDelayMs: retry.initialDelayMs, maxDelayMs: retry.maxDelayMs },
    };
  }

  /** Adds a subscriber to the watch of name + query: a live one, an idle one, or a new one. */
  acquire(name: string, query: DiscoveryQuery = {}): ServiceWatch {
    const key = watchKey(name, query);
    let watch = this.watches.get(key) ?? this.idle.get(key);
    if (!watch) {
      watch = new ServiceWatch(name, { ...query }, this.client, this.options);
      if (this.polling.size < this.maxLongPolls) {
        const polled = watch;
        this.polling.add(polled);
        polled.startPolling(() => this.ended(key, polled));
      } else {
        this.feedFor(query.datacenter).add(watch);
      }
    }
    this.idle.delete(key);
    this.watches.set(key, watch);
    watch.retain();
    return watch;
  }

  /** Drops a subscriber; after the last one a long-poll idles, a feed-served watch stops. */
  release(watch: ServiceWatch): void {
    if (!watch.drop()) return;
    const key = watchKey(watch.name, watch.query);
    this.watches.delete(key);
    if (this.polling.has(watch)) {
      this.idle.set(key, watch);
      watch.idle();
      return;
    }
    this.feeds.get(datacenterKey(watch.query.datacenter))?.remove(watch);
    watch.retire();
  }

  find(name: string, query?: DiscoveryQuery): ServiceWatch | undefined {
    return this.watches.get(watchKey(name, query));
  }

  /** Ends every watch and feed; resolves when their loops have returned. */
  async closeAll(): Promise<void> {
    const all = [...this.watches.values(), ...this.idle.values()];
    const stopping: Promise<unknown>[] = all.map((w) => w.stop());
    stopping.push(...[...this.feeds.values()].map((f) => f.stop()));
    this.watches.clear();
    this.idle.clear();
    this.polling.clear();
    this.feeds.clear();
    await Promise.allSettled(stopping);
  }

  /** A long-poll's loop is over (idle and answered, or stopped): its slot is free. */
  private ended(key: string, watch: ServiceWatch): void {
    this.polling.delete(watch);
    if (this.idle.get(key) === watch) this.idle.delete(key);
  }

  /** One feed per datacenter, kept once made: an empty one ends its polls by itself. */
  private feedFor(datacenter: string | undefined): ChangeFeed {
    const dc = datacenterKey(datacenter);
    let feed = this.feeds.get(dc);
    if (!feed) {
      feed = new ChangeFeed(this.client, datacenter, this.options);
      this.feeds.set(dc, feed);
    }
    return feed;
  }
}
