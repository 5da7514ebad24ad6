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
 * names beyond share one change feed per datacenter, so connections stay bounded.
 */
@Injectable()
export class WatchRegistry {
  private readonly watches = new Map<string, ServiceWatch>();
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

  /** Adds a subscriber to the watch of name + query, starting it when it is the first. */
  acquire(name: string, query: DiscoveryQuery = {}): ServiceWatch {
    const key = watchKey(name, query);
    let watch = this.watches.get(key);
    if (!watch) {
      watch = new ServiceWatch(name, { ...query }, this.client, this.options);
      this.watches.set(key, watch);
      if (this.polling.size < this.maxLongPolls) {
        this.polling.add(watch);
        watch.startPolling();
      } else {
        this.feedFor(query.datacenter).add(watch);
      }
    }
    watch.subscribers++;
    return watch;
  }

  /** Drops a subscriber; the last one stops the watch (and its long-poll). */
  release(watch: ServiceWatch): void {
    if (--watch.subscribers > 0) return;
    this.watches.delete(watchKey(watch.name, watch.query));
    this.polling.delete(watch);
    const dc = datacenterKey(watch.query.datacenter);
    const feed = this.feeds.get(dc);
    if (feed) {
      feed.remove(watch);
      if (feed.size === 0) {
        this.feeds.delete(dc);
        void feed.stop();
      }
    }
    void watch.stop();
  }

  find(name: string, query?: DiscoveryQuery): ServiceWatch | undefined {
    return this.watches.get(watchKey(name, query));
  }

  /** Ends every watch and feed; resolves when their loops have returned. */
  async closeAll(): Promise<void> {
    const stopping: Promise<unknown>[] = [...this.watches.values()].map((w) => w.stop());
    stopping.push(...[...this.feeds.values()].map((f) => f.stop()));
    this.watches.clear();
    this.polling.clear();
    this.feeds.clear();
    await Promise.allSettled(stopping);
  }

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
