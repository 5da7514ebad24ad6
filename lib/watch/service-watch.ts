import { Logger } from '@nestjs/common';
import { concat, defer, Observable, of, Subject } from 'rxjs';
import type { BlockingReadOptions } from '../consul/consul.client.js';
import type { ConsulTransport } from '../consul/consul.transport.js';
import type { DiscoveryQuery, ServiceInstance } from '../protocol/service-discovery.protocol.js';
import type { BackoffPolicy } from '../resilience/backoff.js';
import { TokenBucket } from '../resilience/token-bucket.js';
import type { WatchConsistency } from '../settings/discovery.settings.js';
import { followBlockingQuery } from './blocking-query.loop.js';
import { freezeInstances, sameInstances } from './instance-set.js';

export interface ServiceWatchOptions {
  waitMs: number;
  consistency: WatchConsistency;
  rateLimit: { perSecond: number; burst: number };
  backoff: BackoffPolicy;
}

export interface Freshness {
  updatedAt: Date;
  /** The last refresh attempt failed: the set is the last one Consul gave. */
  stale: boolean;
}

/**
 * The live, in-memory passing set of one name + query. In `poll` mode it keeps one blocking query
 * open; in `feed` mode (beyond `watch.maxLongPolls`) it is refreshed by the shared change feed.
 */
export class ServiceWatch {
  private readonly logger = new Logger(ServiceWatch.name);
  private readonly changes = new Subject<readonly ServiceInstance[]>();
  private readonly abort = new AbortController();
  private readonly bucket: TokenBucket;
  private current?: readonly ServiceInstance[];
  private updatedAt?: Date;
  private stale = false;
  private lastFailure?: unknown;
  private refreshing?: Promise<void>;
  private refreshAgain = false;
  subscribers = 0;
  done: Promise<void> = Promise.resolve();

  constructor(
    readonly name: string,
    readonly query: DiscoveryQuery,
    private readonly client: ConsulTransport,
    private readonly options: ServiceWatchOptions,
  ) {
    this.bucket = new TokenBucket(options.rateLimit.perSecond, options.rateLimit.burst);
  }

  /** Starts this watch's own long-poll loop. */
  startPolling(): void {
    this.done = this.pollLoop();
  }

  /** The current set at once (when known), then every real change. Never errors. */
  get instances$(): Observable<readonly ServiceInstance[]> {
    return defer(() => (this.current ? concat(of(this.current), this.changes) : this.changes));
  }

  get snapshot(): readonly ServiceInstance[] | undefined {
    return this.current;
  }

  get freshness(): Freshness | undefined {
    return this.updatedAt ? { updatedAt: this.updatedAt, stale: this.stale } : undefined;
  }

  get signal(): AbortSignal {
    return this.abort.signal;
  }

  /** One non-blocking read (feed mode); coalesces calls made while one is running. */
  refresh(): Promise<void> {
    if (this.refreshing) {
      this.refreshAgain = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      do {
        this.refreshAgain = false;
        if (!(await this.bucket.take(this.signal))) return;
        try {
          const result = await this.client.watchHealthyInstances(
            this.name,
            this.readOptions(0, false),
          );
          this.publish(result.value);
        } catch (error) {
          this.markStale(error);
        }
      } while (this.refreshAgain && !this.signal.aborted);
    })().finally(() => (this.refreshing = undefined));
    this.done = this.refreshing;
    return this.refreshing;
  }

  /** Why the last refresh failed, while the set is stale or not known yet. */
  get failure(): unknown {
    return this.lastFailure;
  }

  markStale(error: unknown): void {
    if (this.signal.aborted) return;
    this.lastFailure = error;
    if (!this.stale) {
      this.logger.warn(`Watch of "${this.name}" serves its last known set: ${describe(error)}`);
    }
    this.stale = true;
  }

  stop(): Promise<void> {
    this.abort.abort();
    this.changes.complete();
    return this.done;
  }

  private pollLoop(): Promise<void> {
    return followBlockingQuery({
      signal: this.signal,
      bucket: this.bucket,
      backoff: this.options.backoff,
      read: (index) => this.client.watchHealthyInstances(this.name, this.readOptions(index, true)),
      onAnswer: (instances) => this.publish(instances),
      onError: (error) => {
        if (this.client.closed) return false; // nothing to retry once closed
        this.markStale(error);
        return true;
      },
    });
  }

  private readOptions(index: number, longPoll: boolean): BlockingReadOptions {
    return {
      ...this.query,
      consistency: this.options.consistency,
      index,
      waitMs: this.options.waitMs,
      longPoll,
      signal: this.signal,
    };
  }

  private publish(instances: ServiceInstance[]): void {
    if (this.signal.aborted) return;
    this.updatedAt = new Date();
    if (this.stale) this.logger.log(`Watch of "${this.name}" is fresh again`);
    this.stale = false;
    this.lastFailure = undefined;
    if (this.current && sameInstances(this.current, instances)) return;
    this.current = freezeInstances(instances);
    this.changes.next(this.current);
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
