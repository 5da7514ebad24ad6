import { Logger } from '@nestjs/common';
import type { BlockingReadOptions } from '../consul/consul.client.js';
import type { ConsulTransport } from '../consul/consul.transport.js';
import type { IndexedResult, RawHealthCheck } from '../consul/consul.types.js';
import { TokenBucket } from '../resilience/token-bucket.js';
import { followBlockingQuery } from './blocking-query.loop.js';
import type { ServiceWatch, ServiceWatchOptions } from './service-watch.js';

/** One feed's answer: a fingerprint per lower-cased service name, and Consul's index. */
interface Fingerprints {
  index: number;
  byName: Map<string, string>;
}
type FeedName = 'health.state' | 'catalog.services';
const FEED_COUNT = 2;
type FeedRead = (index: number, signal: AbortSignal) => Promise<IndexedResult<Fingerprints>>;

/**
 * The shared change feed for names beyond `watch.maxLongPolls`: two blocking queries
 * (`/v1/health/state/any` and `/v1/catalog/services`) per datacenter, however many names. Only
 * the watches whose name shows a change are re-read; names compare case-insensitively, as Consul
 * matches them. A registration changed in place (same id, new address, port or meta) moves the
 * catalog's index without changing any name's tags: every name is re-read then.
 * With no watch left the polls are not aborted but not sent again; a watch added meanwhile
 * reuses them.
 */
export class ChangeFeed {
  private readonly logger = new Logger(ChangeFeed.name);
  private readonly watches = new Set<ServiceWatch>();
  private readonly abort = new AbortController();
  /** The loops running, by feed. */
  private readonly running = new Map<FeedName, Promise<void>>();
  /** The feeds that have answered since they (re)started. */
  private readonly baselined = new Set<FeedName>();

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
    this.start('health.state', (index, signal) => this.readChecks(index, signal));
    this.start('catalog.services', (index, signal) => this.readNames(index, signal));
    // Before the feed has its baseline, its first answers read every name anyway.
    if (this.baselined.size === FEED_COUNT) void watch.refresh();
  }

  remove(watch: ServiceWatch): void {
    this.watches.delete(watch);
  }

  stop(): Promise<unknown> {
    this.abort.abort();
    return Promise.all(this.running.values());
  }

  private start(what: FeedName, read: FeedRead): void {
    if (this.running.has(what) || this.abort.signal.aborted) return;
    const loop = this.follow(what, read);
    this.running.set(what, loop);
  }

  private follow(what: FeedName, read: FeedRead): Promise<void> {
    const signal = this.abort.signal;
    let previous: Fingerprints | undefined;
    return followBlockingQuery({
      signal,
      bucket: new TokenBucket(this.options.rateLimit.perSecond, this.options.rateLimit.burst),
      backoff: this.options.backoff,
      // Decided synchronously, so a watch added right after restarts the loop.
      rearm: () => {
        if (this.watches.size > 0) return true;
        this.running.delete(what);
        this.baselined.delete(what);
        return false;
      },
      read: (index) => read(index, signal),
      onAnswer: (current) => {
        if (previous) this.refreshChanged(what, previous, current);
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
  private baseline(what: FeedName): void {
    this.baselined.add(what);
    if (this.baselined.size === FEED_COUNT) {
      for (const watch of this.watches) void watch.refresh();
    }
  }

  private refreshChanged(what: FeedName, previous: Fingerprints, current: Fingerprints): void {
    const changed = (name: string): boolean =>
      previous.byName.get(name) !== current.byName.get(name);
    // Node checks (service name '') affect every service on the node; a catalog index that moved
    // with no name's tags changed is a registration changed in place, of a name we cannot tell.
    const all =
      (what === 'health.state' && changed('')) ||
      (what === 'catalog.services' &&
        current.index !== previous.index &&
        [...new Set([...previous.byName.keys(), ...current.byName.keys()])].every(
          (n) => !changed(n),
        ));
    for (const watch of this.watches) {
      if (all || changed(watch.name.toLowerCase())) void watch.refresh();
    }
  }

  private async readChecks(
    index: number,
    signal: AbortSignal,
  ): Promise<IndexedResult<Fingerprints>> {
    const result = await this.client.watchCheckStates(this.readOptions(index, signal));
    const lists = new Map<string, string[]>();
    for (const check of result.value) {
      const name = check.ServiceName.toLowerCase();
      const list = lists.get(name) ?? [];
      list.push(checkFingerprint(check));
      lists.set(name, list);
    }
    const byName = new Map<string, string>();
    for (const [name, list] of lists) byName.set(name, list.sort().join('|'));
    return { value: { index: result.index, byName }, index: result.index };
  }

  private async readNames(
    index: number,
    signal: AbortSignal,
  ): Promise<IndexedResult<Fingerprints>> {
    const result = await this.client.watchServiceNames(this.readOptions(index, signal));
    const byName = new Map<string, string>();
    for (const [name, tags] of Object.entries(result.value)) {
      const key = name.toLowerCase();
      const seen = byName.get(key);
      const fingerprint = JSON.stringify(tags ?? []);
      byName.set(key, seen === undefined ? fingerprint : `${seen}|${fingerprint}`);
    }
    return { value: { index: result.index, byName }, index: result.index };
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
