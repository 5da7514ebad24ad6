import { Logger } from '@nestjs/common';
import type { BlockingReadOptions } from '../consul/consul.client.js';
import type { ConsulTransport } from '../consul/consul.transport.js';
import type { IndexedResult, RawHealthCheck } from '../consul/consul.types.js';
import { TokenBucket } from '../resilience/token-bucket.js';
import { followBlockingQuery } from './blocking-query.loop.js';
import type { ServiceWatch, ServiceWatchOptions } from './service-watch.js';

type Fingerprints = Map<string, string>;
const FEED_COUNT = 2;
type FeedRead = (index: number, signal: AbortSignal) => Promise<IndexedResult<Fingerprints>>;

/**
 * The shared change feed for names beyond `watch.maxLongPolls`: two blocking queries
 * (`/v1/health/state/any` and `/v1/catalog/services`) per datacenter, however many names. Only
 * the watches whose name shows a change are re-read.
 */
export class ChangeFeed {
  private readonly logger = new Logger(ChangeFeed.name);
  private readonly watches = new Set<ServiceWatch>();
  private readonly abort = new AbortController();
  private done: Promise<unknown> = Promise.resolve();
  /** The feeds that have answered since they (re)started. */
  private readonly baselined = new Set<string>();

  constructor(
    private readonly client: ConsulTransport,
    private readonly datacenter: string | undefined,
    private readonly options: ServiceWatchOptions,
  ) {}

  get size(): number {
    return this.watches.size;
  }

  add(watch: ServiceWatch): void {
    this.watches.add(watch);
    if (this.watches.size === 1) {
      this.done = Promise.all([
        this.follow('health.state', (index, signal) => this.readChecks(index, signal)),
        this.follow('catalog.services', (index, signal) => this.readNames(index, signal)),
      ]);
    }
    // Before the feed has its baseline, its first answers read every name anyway.
    if (this.baselined.size === FEED_COUNT) void watch.refresh();
  }

  remove(watch: ServiceWatch): void {
    this.watches.delete(watch);
  }

  stop(): Promise<unknown> {
    this.abort.abort();
    return this.done;
  }

  private follow(what: string, read: FeedRead): Promise<void> {
    const signal = this.abort.signal;
    let previous: Fingerprints | undefined;
    return followBlockingQuery({
      signal,
      bucket: new TokenBucket(this.options.rateLimit.perSecond, this.options.rateLimit.burst),
      backoff: this.options.backoff,
      read: (index) => read(index, signal),
      onAnswer: (current) => {
        if (previous) this.refreshChanged(previous, current);
        else this.baseline(what);
        previous = current;
      },
      onError: (error) => {
        if (this.client.closed) return false; // nothing to retry once closed
        this.logger.warn(`Change feed (${what}) failed: ${(error as Error).message}`);
        for (const watch of this.watches) watch.markStale(error);
        previous = undefined;
        this.baselined.delete(what);
        return true;
      },
    });
  }

  /**
   * Once both feeds have answered (at start, or again after a failure) nothing can be compared
   * yet: every name is read once, after the feeds' answers, so no change falls in between.
   */
  private baseline(what: string): void {
    this.baselined.add(what);
    if (this.baselined.size === FEED_COUNT) {
      for (const watch of this.watches) void watch.refresh();
    }
  }

  private refreshChanged(previous: Fingerprints, current: Fingerprints): void {
    const nodeChecksChanged = previous.get('') !== current.get('');
    for (const watch of this.watches) {
      // Node checks (service name '') affect every service on the node.
      if (nodeChecksChanged || previous.get(watch.name) !== current.get(watch.name)) {
        void watch.refresh();
      }
    }
  }

  private async readChecks(
    index: number,
    signal: AbortSignal,
  ): Promise<IndexedResult<Fingerprints>> {
    const result = await this.client.watchCheckStates(this.readOptions(index, signal));
    const byName = new Map<string, string[]>();
    for (const check of result.value) {
      const list = byName.get(check.ServiceName) ?? [];
      list.push(checkFingerprint(check));
      byName.set(check.ServiceName, list);
    }
    const value: Fingerprints = new Map();
    for (const [name, list] of byName) value.set(name, list.sort().join('|'));
    return { value, index: result.index };
  }

  private async readNames(
    index: number,
    signal: AbortSignal,
  ): Promise<IndexedResult<Fingerprints>> {
    const result = await this.client.watchServiceNames(this.readOptions(index, signal));
    const value: Fingerprints = new Map(
      Object.entries(result.value).map(([name, tags]) => [name, JSON.stringify(tags ?? [])]),
    );
    return { value, index: result.index };
  }

  private readOptions(index: number, signal: AbortSignal): BlockingReadOptions {
    return {
      datacenter: this.datacenter,
      consistency: this.options.consistency,
      index,
      waitMs: this.options.waitMs,
      longPoll: true,
      signal,
    };
  }
}

function checkFingerprint(check: RawHealthCheck): string {
  return `${check.Node}/${check.ServiceID}/${check.CheckID}/${check.Status}`;
}
