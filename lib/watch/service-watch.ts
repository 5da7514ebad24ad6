import { Logger } from '@nestjs/common';
import { concat, defer, Observable, of, Subject } from 'rxjs';
import type { BlockingReadOptions } from '../consul/consul.client.js';
import type { ConsulTransport } from '../consul/consul.transport.js';
import type { DiscoveryQuery, ServiceInstance } from '../protocol/service-discovery.protocol.js';
import { abortableDelay } from '../resilience/abortable-delay.js';
import { backoffDelay, type BackoffPolicy } from '../resilience/backoff.js';
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
 * `live`: subscribed. `idle`: no subscriber left, its long-poll is left to end by itself (an
 * aborted one would stay held by a 1.8 agent until its wait ends) and a returning
 * subscriber makes it `live` again. `ended`: its loop returned or it was stopped; never reused.
 */
type WatchLife = 'live' | 'idle' | 'ended';

/**
 * The live, in-memory passing set of one name + query. In `poll` mode it keeps one blocking query
 * open; in `feed` mode (beyond `watch.maxLongPolls`) it is refreshed by the shared change feed.
 */
export class ServiceWatch {
  private readonly logger = new Logger(ServiceWatch.name);
  private readonly changes = new Subject<readonly ServiceInstance[]>();
  private readonly failures = new Subject<unknown>();
  private readonly abort = new AbortController();
  private readonly bucket: TokenBucket;
  private current?: readonly ServiceInstance[];
  private updatedAt?: Date;
  private stale = false;
  private lastFailure?: unknown;
  private refreshing?: Promise<void>;
  private refreshAgain = false;
  private subscribers = 0;
  private life: WatchLife = 'live';
  private onEnded?: () => void;
  done: Promise<void> = Promise.resolve();

  constructor(
    readonly name: string,
    readonly query: DiscoveryQuery,
    private readonly client: ConsulTransport,
    private readonly options: ServiceWatchOptions,
  ) {
    this.bucket = new TokenBucket(options.rateLimit.perSecond, options.rateLimit.burst);
  }

  /** Starts this watch's own long-poll loop; `onEnded` runs (synchronously) once it is over. */
  startPolling(onEnded: () => void): void {
    this.onEnded = onEnded;
    this.done = this.pollLoop();
  }

  /** One more subscriber; an idle watch is live again (its long-poll goes on). */
  retain(): void {
    this.subscribers++;
    if (this.life === 'idle') this.life = 'live';
  }

  /** One subscriber less; `true` when it was the last. */
  drop(): boolean {
    return --this.subscribers === 0;
  }

  /** No subscriber left: the long-poll in flight is not aborted, only not sent again. */
  idle(): void {
    if (this.life === 'live') this.life = 'idle';
  }

  /** The current set at once (when known), then every real change. Never errors. */
  get instances$(): Observable<readonly ServiceInstance[]> {
    return defer(() => (this.current ? concat(of(this.current), this.changes) : this.changes));
  }

  /** Each failed read as it happens (the set stays as it was). Never errors. */
  get failures$(): Observable<unknown> {
    return this.failures.asObservable();
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

  /**
   * One non-blocking read (feed mode); coalesces calls made while one is running. A failed read
   * is retried with the watch's backoff until one succeeds (stale meanwhile) or the watch stops.
   */
  refresh(): Promise<void> {
    if (this.refreshing) {
      this.refreshAgain = true;
      return this.refreshing;
    }
    this.refreshing = this.refreshUntilRead().finally(() => (this.refreshing = undefined));
    this.done = this.refreshing;
    return this.refreshing;
  }

  private async refreshUntilRead(): Promise<void> {
    let failures = 0;
    do {
      this.refreshAgain = false;
      if (!(await this.bucket.take(this.signal)) || this.ended) return;
      try {
        const result = await this.client.watchHealthyInstances(
          this.name,
          this.readOptions(0, false),
        );
        failures = 0;
        this.publish(result.value);
      } catch (error) {
        if (this.ended || this.signal.aborted || this.client.closed) return;
        this.markStale(error);
        this.refreshAgain = true;
        const delay = backoffDelay(failures++, this.options.backoff);
        if (!(await abortableDelay(delay, this.signal))) return;
      }
    } while (this.refreshAgain && !this.ended && !this.signal.aborted);
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
    this.failures.next(error);
  }

  /**
   * A feed-served watch's last unsubscribe: no read is sent again, the one in flight (a short
   * read) is let finish, as an aborted one would hold its connection until the agent answers.
   */
  retire(): void {
    this.end();
    if (this.refreshing) void this.refreshing.finally(() => this.abort.abort());
    else this.abort.abort();
  }

  /** Aborts whatever is in flight (shutdown). */
  stop(): Promise<void> {
    this.abort.abort();
    this.end();
    return this.done;
  }

  /** A getter, so the compiler does not narrow it across awaits. */
  private get ended(): boolean {
    return this.life === 'ended';
  }

  private end(): void {
    if (this.ended) return;
    this.life = 'ended';
    this.changes.complete();
    this.failures.complete();
    this.onEnded?.();
  }

  private pollLoop(): Promise<void> {
    return followBlockingQuery({
      signal: this.signal,
      bucket: this.bucket,
      backoff: this.options.backoff,
      rearm: () => {
        if (this.life === 'live') return true;
        this.end();
        return false;
      },
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
