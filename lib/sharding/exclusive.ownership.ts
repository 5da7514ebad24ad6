import type { Logger } from '@nestjs/common';
import type { Subscription } from 'rxjs';
import type { LockEntry } from '../consul/consul.client.js';
import type { ConsulTransport } from '../consul/consul.transport.js';
import { serviceCheckId } from '../consul/agent-definition.js';
import type { TtlHealthCheckSettings } from '../protocol/health-check.rules.js';
import type { SelfRegistration } from '../registration/self-registration.js';
import { TokenBucket } from '../resilience/token-bucket.js';
import { withDeadline } from '../resilience/with-deadline.js';
import type { DiscoverySettings, ShardingSettings } from '../settings/discovery.settings.js';
import { followBlockingQuery } from '../watch/blocking-query.loop.js';
import { ascending, type Ownership, type OwnershipChanged } from './ownership.js';
import type { PartitionWorkers } from './partition-workers.js';

const INVALID_SESSION = /invalid session/i;
const SESSION_RETRY_MS = 1_000;

/**
 * At most one owner per partition: an instance owns a partition only while its session holds the
 * partition's KV lock (`<prefix>/<service>/<p>`) and its own lease is fresh.
 *
 * - The session is bound to the instance's own TTL check: when the instance dies or stops
 *   passing, Consul invalidates it and frees its locks (after `lockDelay`).
 * - Self-fencing: the lease is the time since the last confirmed TTL pass; past
 *   `ttl − max(1 s, ttl/10)` — before Consul could give the partition to anyone — `owns()` is
 *   false, handlers are aborted, and every partition must be acquired through Consul again.
 * - One blocking query on the prefix shows locks taken from us (another session on our key, or
 *   the key gone after an agent restart) and freed keys we want.
 * - Locks are released (`?release=`, no lock-delay) after the handlers drained, never deleted:
 *   `LockIndex`, the fencing token, must only grow.
 */
export class ExclusiveOwnership implements Ownership {
  private readonly config: ShardingSettings;
  private readonly keyPrefix: string;
  private readonly leaseMs: number;
  private readonly serviceId: string;
  private session?: string;
  /** Locks this session holds, as far as Consul last told. */
  private readonly held = new Map<number, { lockIndex: number; modifyIndex: number }>();
  /**
   * Locks dropped from `held` by a lapse that the session may still hold in Consul (a local
   * lapse, e.g. a late heartbeat, leaves the session valid): released unless re-acquired.
   */
  private readonly orphans = new Set<number>();
  /** Held, handlers started, and not dropped by a lapse since. */
  private readonly live = new Set<number>();
  private readonly releasing = new Set<number>();
  private target = new Set<number>();
  private lapsed = true;
  /**
   * The pass the lease counts from (`performance.now()`), set by each pass; one that comes after
   * the lease ran out lapses it first, so a late pass never revives what `owns()` saw stale.
   */
  private leaseFrom?: number;
  private reconciling?: Promise<void>;
  private reconcileAgain = false;
  private retryTimer?: NodeJS.Timeout;
  private lapseTimer?: NodeJS.Timeout;
  private subscriptions?: Subscription;
  private readonly abort = new AbortController();
  private prefixLoop: Promise<void> = Promise.resolve();
  private prefixFailing = false;
  /** The last answer's index on the prefix; one lower means Consul's state was reset. */
  private prefixIndex = 0;
  private readonly pending = new Set<Promise<unknown>>();

  constructor(
    private readonly settings: DiscoverySettings,
    private readonly client: ConsulTransport,
    private readonly registration: SelfRegistration,
    private readonly workers: PartitionWorkers,
    private readonly changed: OwnershipChanged,
    private readonly logger: Logger,
  ) {
    this.config = settings.sharding!;
    this.serviceId = settings.service.id!;
    this.keyPrefix = `${this.config.lock.prefix}/${settings.service.name!}/`;
    // Settings validation makes exclusive mode require the TTL check.
    const ttlMs = (settings.healthCheck as TtlHealthCheckSettings).ttlMs;
    this.leaseMs = ttlMs - Math.max(1_000, ttlMs / 10);
  }

  start(): void {
    this.subscriptions = this.registration.passed$.subscribe(() => this.onPass());
    // The agent lost its state: the session and its locks with it. Let go at once instead of
    // waiting for the lease or the prefix to tell.
    this.subscriptions.add(this.registration.lost$.subscribe(() => this.lapse(true)));
    if (this.registration.lastPassAt !== undefined) this.onPass();
    const { watch, retry } = this.settings;
    this.prefixLoop = followBlockingQuery({
      signal: this.abort.signal,
      bucket: new TokenBucket(watch.rateLimit.perSecond, watch.rateLimit.burst),
      backoff: { initialDelayMs: retry.initialDelayMs, maxDelayMs: retry.maxDelayMs },
      read: async (index) => {
        const answer = await this.client.watchPrefix(this.keyPrefix, {
          index,
          waitMs: watch.waitMs,
          longPoll: true,
          signal: this.abort.signal,
        });
        return { value: answer, index: answer.index };
      },
      onAnswer: ({ value, index }) => {
        this.prefixFailing = false;
        this.onKeys(value, index);
      },
      onError: (error) => {
        if (this.client.closed) return false;
        if (!this.prefixFailing) {
          this.logger.warn(`Following the sharding locks failed: ${(error as Error).message}`);
        }
        this.prefixFailing = true;
        return true;
      },
    });
  }

  assign(target: readonly number[]): void {
    this.target = new Set(target);
    this.reconcile();
  }

  owns(partition: number): boolean {
    return this.live.has(partition) && this.leaseFresh();
  }

  owned(): number[] {
    return this.leaseFresh() ? ascending(this.live) : [];
  }

  token(partition: number): number | undefined {
    return this.owns(partition) ? this.held.get(partition)?.lockIndex : undefined;
  }

  async stop(deadline: number): Promise<void> {
    this.abort.abort();
    this.subscriptions?.unsubscribe();
    clearTimeout(this.retryTimer);
    clearTimeout(this.lapseTimer);
    this.target.clear();
    const dropped = this.drop();
    // Handlers get half of what remains; the rest is for releasing, destroying, deregistering.
    const handlersMs = Math.min(this.config.drainTimeoutMs, (deadline - Date.now()) / 2);
    await withDeadline(
      Promise.all([...dropped.map((p) => this.workers.release(p, handlersMs)), this.reconciling]),
      handlersMs,
    );
    const session = this.session;
    if (!session) return;
    await withDeadline(
      Promise.allSettled(
        [...new Set([...this.held.keys(), ...this.orphans])].map((p) =>
          this.client.unlock(this.key(p), session),
        ),
      ),
      deadline - Date.now(),
    );
    this.held.clear();
    await withDeadline(this.client.destroySession(session), deadline - Date.now());
    this.session = undefined;
    await withDeadline(
      Promise.allSettled([this.prefixLoop, ...this.pending]),
      deadline - Date.now(),
    );
  }

  private leaseFresh(): boolean {
    const from = this.leaseFrom;
    return from !== undefined && performance.now() - from < this.leaseMs;
  }

  private onPass(): void {
    if (this.abort.signal.aborted) return;
    // The lease ran out before this pass came (its timer not run yet, e.g. a busy loop): owns()
    // may have said false already, so it lapses now and the partitions are acquired again.
    if (!this.lapsed && !this.leaseFresh()) this.lapse();
    this.leaseFrom = this.registration.lastPassAt!;
    this.armLapse();
    if (this.lapsed && this.leaseFresh()) {
      this.lapsed = false;
      this.reconcile();
    }
  }

  /**
   * Node's timers may fire a little before `performance.now()` reaches their delay (they count
   * from the loop's cached time): one that finds the lease still fresh waits out the rest.
   */
  private armLapse(): void {
    clearTimeout(this.lapseTimer);
    this.lapseTimer = setTimeout(
      () => (this.leaseFresh() ? this.armLapse() : this.lapse()),
      Math.max(0, this.leaseFrom! + this.leaseMs - performance.now()),
    );
    this.lapseTimer.unref();
  }

  /**
   * No pass confirmed for a lease (or `force`: the agent lost the registration): let go of
   * everything until Consul grants each again.
   */
  private lapse(force = false): void {
    if ((!force && this.leaseFresh()) || this.abort.signal.aborted) return;
    this.lapsed = true;
    if (force) {
      // Whatever the old session held went with the agent's state.
      this.session = undefined;
    }
    const dropped = this.drop();
    for (const p of this.held.keys()) this.orphans.add(p);
    this.held.clear();
    if (dropped.length > 0) {
      this.logger.warn(
        `${force ? `The agent lost "${this.serviceId}" and its session` : `The lease of "${this.serviceId}" lapsed (no TTL pass confirmed for ${this.leaseMs} ms)`}: released partitions ${dropped.join(', ')} until Consul grants them again`,
      );
    }
    for (const p of dropped) this.track(this.workers.release(p, this.config.drainTimeoutMs));
  }

  /** Every live partition stops counting as owned at once; returns them. */
  private drop(): number[] {
    const dropped = ascending(this.live);
    this.live.clear();
    if (dropped.length > 0) this.changed([], dropped);
    return dropped;
  }

  /** `index`: the answer's `X-Consul-Index`; a lock taken after it is not in the answer yet. */
  private onKeys(entries: LockEntry[], index: number): void {
    // The index went backwards (a restarted agent lost its state): every lock we recorded
    // carries an index from before, so compare them all with this answer.
    if (index < this.prefixIndex) for (const lock of this.held.values()) lock.modifyIndex = 0;
    this.prefixIndex = index;
    const holders = new Map<number, string | undefined>();
    for (const entry of entries) {
      const partition = Number(entry.key.slice(this.keyPrefix.length));
      if (Number.isInteger(partition)) holders.set(partition, entry.session);
    }
    const lost = [...this.held].flatMap(([p, lock]) =>
      !this.releasing.has(p) && lock.modifyIndex <= index && holders.get(p) !== this.session
        ? [p]
        : [],
    );
    const lostLive = lost.filter((p) => this.live.delete(p));
    for (const p of lost) this.held.delete(p);
    if (lostLive.length > 0) {
      this.logger.warn(`Lost the locks of partitions ${lostLive.join(', ')}; their handlers stop`);
      this.changed([], lostLive);
      for (const p of lostLive) this.track(this.workers.release(p, this.config.drainTimeoutMs));
    }
    const free = [...this.target].some((p) => !this.held.has(p) && !holders.get(p));
    if (lost.length > 0 || free) this.reconcile();
  }

  /** One reconciliation at a time; calls meanwhile run it once more afterwards. */
  private reconcile(): void {
    if (this.abort.signal.aborted) return;
    if (this.reconciling) {
      this.reconcileAgain = true;
      return;
    }
    this.reconciling = (async () => {
      do {
        this.reconcileAgain = false;
        await this.reconcileOnce();
      } while (this.reconcileAgain && !this.abort.signal.aborted);
    })().finally(() => (this.reconciling = undefined));
  }

  private async reconcileOnce(): Promise<void> {
    const released = ascending(this.held.keys()).filter(
      (p) => !this.target.has(p) && !this.releasing.has(p),
    );
    const wereLive = released.filter((p) => this.live.delete(p));
    if (wereLive.length > 0) this.changed([], wereLive);
    for (const p of released) this.release(p);
    for (const p of [...this.orphans]) {
      if (!this.target.has(p) && !this.releasing.has(p) && !this.held.has(p)) this.release(p);
    }
    if (this.lapsed || !this.leaseFresh() || this.registration.state !== 'registered') return;
    const wanted = ascending(this.target).filter(
      (p) => !this.held.has(p) && !this.releasing.has(p),
    );
    if (wanted.length === 0) return;
    const session = await this.ensureSession();
    if (!session) return;
    const acquired: number[] = [];
    let retryMs: number | undefined;
    await Promise.all(
      wanted.map(async (p) => {
        try {
          const attempt = await this.client.lock(this.key(p), session, this.serviceId);
          if (attempt.acquired) {
            this.orphans.delete(p);
            this.held.set(p, { lockIndex: attempt.lockIndex, modifyIndex: attempt.modifyIndex });
            // A lease that lapsed meanwhile is not revived: the next pass re-acquires.
            // Nor does a lock granted after shutdown began start a handler (stop() releases it).
            if (
              !this.abort.signal.aborted &&
              !this.lapsed &&
              this.leaseFresh() &&
              this.target.has(p) &&
              session === this.session
            ) {
              this.live.add(p);
              this.workers.start(p, attempt.lockIndex);
              acquired.push(p);
            }
          } else if (INVALID_SESSION.test(attempt.reason)) {
            if (this.session === session) this.session = undefined;
            retryMs = 0;
          } else {
            // Held by another session (the prefix shows its release) or in lock-delay (it does not).
            retryMs ??= this.config.lock.lockDelayMs;
          }
        } catch (error) {
          if (!this.abort.signal.aborted) {
            this.logger.warn(`Could not acquire partition ${p}: ${(error as Error).message}`);
          }
          retryMs = SESSION_RETRY_MS;
        }
      }),
    );
    if (acquired.length > 0) this.changed(ascending(acquired), []);
    if (retryMs !== undefined) this.retryIn(retryMs);
  }

  /**
   * Drains the handlers, then releases the lock (no lock-delay follows a release); the
   * partition stopped counting as owned already (`live`).
   */
  private release(partition: number): void {
    this.releasing.add(partition);
    const session = this.session;
    const done = (async () => {
      await this.workers.release(partition, this.config.drainTimeoutMs);
      try {
        if (session && (this.held.has(partition) || this.orphans.has(partition))) {
          await this.client.unlock(this.key(partition), session);
        }
      } catch (error) {
        if (!this.abort.signal.aborted) {
          this.logger.warn(`Could not release partition ${partition}: ${(error as Error).message}`);
        }
      } finally {
        this.held.delete(partition);
        this.orphans.delete(partition);
        this.releasing.delete(partition);
      }
      this.reconcile();
    })();
    this.track(done);
  }

  private async ensureSession(): Promise<string | undefined> {
    if (this.session) return this.session;
    try {
      this.session = await this.client.createSession({
        name: `athomic-sharding:${this.serviceId}`,
        serviceCheckId: serviceCheckId(this.serviceId),
        lockDelay: this.config.lock.lockDelay,
      });
      // Locks of an older session are gone with it.
      this.held.clear();
      this.orphans.clear();
      return this.session;
    } catch (error) {
      if (!this.abort.signal.aborted) {
        this.logger.warn(`Could not create the sharding session: ${(error as Error).message}`);
        this.retryIn(SESSION_RETRY_MS);
      }
      return undefined;
    }
  }

  private retryIn(ms: number): void {
    if (this.abort.signal.aborted || this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.reconcile();
    }, ms);
    this.retryTimer.unref();
  }

  private key(partition: number): string {
    return `${this.keyPrefix}${partition}`;
  }

  private track(work: Promise<unknown>): void {
    const tracked = work.finally(() => this.pending.delete(tracked));
    this.pending.add(tracked);
  }
}
