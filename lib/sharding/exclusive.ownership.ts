import type { Logger } from '@nestjs/common';
import type { Subscription } from 'rxjs';
import type { LockAttempt, LockEntry } from '../consul/consul.client.js';
import { LOCAL_DATACENTER } from '../consul/consul.client.js';
import type { ConsulTransport } from '../consul/consul.transport.js';
import { serviceCheckId } from '../consul/agent-definition.js';
import type { TtlHealthCheckSettings } from '../protocol/health-check.rules.js';
import { leaseMs } from '../protocol/lease.rules.js';
import type { SelfRegistration } from '../registration/self-registration.js';
import { abortableDelay } from '../resilience/abortable-delay.js';
import { TokenBucket } from '../resilience/token-bucket.js';
import { withDeadline } from '../resilience/with-deadline.js';
import type { DiscoverySettings, ShardingSettings } from '../settings/discovery.settings.js';
import { followBlockingQuery } from '../watch/blocking-query.loop.js';
import { Lease } from './lease.state.js';
import { ascending, shutdownDrainMs, type Ownership, type OwnershipChanged } from './ownership.js';
import {
  grantEvent,
  nextPartitionLockState,
  type LockRequest,
  type PartitionLockEvent,
  type PartitionLockState,
} from './partition-lock.state.js';
import type { PartitionWorkers } from './partition-workers.js';

const INVALID_SESSION = /invalid session/i;
const LOCK_DELAY = /lock delay/i;
const SESSION_RETRY_MS = 1_000;

/** One partition's lock (`partition-lock.state.ts`); absent from the map = `free`, never used. */
interface PartitionLock {
  state: PartitionLockState;
  /** From `acquiring` on: the lease epoch and session the lock was asked with (and is held by). */
  request?: LockRequest;
  /** `running`: the run's fencing token. */
  token?: number;
  /** The greatest token a run got here: a later run needs a greater one. */
  lastToken: number;
  /** The grant's `ModifyIndex`: a prefix answer older than it does not know of the lock yet. */
  modifyIndex: number;
}

/**
 * At most one owner per partition: an instance owns a partition only while its session holds the
 * partition's KV lock (`<prefix>/<service>/<p>`) and its own lease is fresh. Two explicit state
 * machines (docs/ARCHITECTURE.md): the lease (`lease.state.ts`) and one per partition
 * (`partition-lock.state.ts`).
 *
 * - The session is bound to the instance's own TTL check: when the instance dies or stops
 *   passing, Consul invalidates it and frees its locks (after `lockDelay`).
 * - Self-fencing: past `ttl − max(1 s, ttl/10)` without a confirmed pass — before Consul could
 *   give the partition to anyone — `owns()` is false, handlers are aborted, and every lock is
 *   released once its run drained, then asked again: each run gets a new `LockIndex`.
 * - Every Consul answer is applied to the state it was asked from; a grant that comes back to
 *   another (lease epoch, session, table, shutdown) is released, never dropped.
 * - One blocking query on the prefix shows locks taken from us (another session on our key, or
 *   the key gone after an agent restart), freed keys we want, and keys our session holds that
 *   nobody here works (released).
 * - Locks are released (`?release=`, no lock-delay) after the handlers drained, never deleted:
 *   `LockIndex`, the fencing token, must only grow.
 */
export class ExclusiveOwnership implements Ownership {
  private readonly config: ShardingSettings;
  private readonly keyPrefix: string;
  private readonly serviceId: string;
  private readonly lease: Lease;
  private readonly locks = new Map<number, PartitionLock>();
  private target = new Set<number>();
  private session?: string;
  private opening?: Promise<void>;
  private stopping = false;
  /** Resolves when shutdown stops waiting for handlers: draining locks are released then. */
  private readonly drainCut: Promise<void>;
  private cutDrains!: () => void;
  private retryTimer?: NodeJS.Timeout;
  private retryAt = 0;
  /** No acquisition before this (`performance.now()`): one lease after the agent lost its state. */
  private acquireFrom = 0;
  private lapseTimer?: NodeJS.Timeout;
  private subscriptions?: Subscription;
  private readonly abort = new AbortController();
  private prefixLoop: Promise<void> = Promise.resolve();
  private prefixFailing = false;
  /** The last answer's index on the prefix; one lower means Consul's state was reset. */
  private prefixIndex = 0;
  /** The last prefix answer: the session holding each partition's key (none: free). */
  private holders = new Map<number, string | undefined>();
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
    this.lease = new Lease(leaseMs((settings.healthCheck as TtlHealthCheckSettings).ttlMs));
    this.drainCut = new Promise((resolve) => (this.cutDrains = resolve));
  }

  start(): void {
    this.subscriptions = this.registration.passed$.subscribe((sentAt) => this.onPass(sentAt));
    // The agent lost its state: the session and its locks with it. Let go at once instead of
    // waiting for the lease or the prefix to tell.
    this.subscriptions.add(this.registration.lost$.subscribe(() => this.onLost()));
    // Nothing is asked while a registration is under way (registerSelf() while registered, a
    // repair): once it settles, the locks the table wants are asked again.
    this.subscriptions.add(
      this.registration.state$.subscribe((state) => {
        if (state === 'registered') this.reconcile();
      }),
    );
    const lastPass = this.registration.lastPassAt;
    if (lastPass !== undefined) this.onPass(lastPass);
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
          // The locks live where the session does: in the agent's own datacenter.
          datacenter: LOCAL_DATACENTER,
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
    const lock = this.locks.get(partition);
    return (
      lock?.state === 'running' &&
      lock.request!.epoch === this.lease.epoch &&
      this.lease.isFresh(performance.now())
    );
  }

  owned(): number[] {
    return ascending([...this.locks.keys()].filter((p) => this.owns(p)));
  }

  token(partition: number): number | undefined {
    return this.owns(partition) ? this.locks.get(partition)!.token : undefined;
  }

  /**
   * `deregisterSelf()`: `owns()` is false at once; every run is drained and its lock released
   * (no lock-delay for the next owner), then the session — holding nothing — destroyed. Nothing
   * is acquired again until `restore()`.
   */
  async withdraw(): Promise<void> {
    if (this.stopping) return;
    this.lease.withdraw();
    clearTimeout(this.lapseTimer);
    const dropped = this.stopRuns();
    if (dropped.length > 0) {
      this.logger.log(
        `Deregistering "${this.serviceId}": releasing partitions ${dropped.join(', ')} first`,
      );
    }
    const { drainTimeoutMs } = this.config;
    await withDeadline(this.idle(), drainTimeoutMs + this.settings.consul.timeoutMs);
    const session = this.session;
    if (session && this.lease.state === 'withdrawn') {
      this.session = undefined;
      await this.client.destroySession(session).catch((error: unknown) => {
        this.logger.warn(`Could not destroy the sharding session: ${(error as Error).message}`);
      });
    }
  }

  /** `registerSelf()` succeeded: partitions are acquired again while the lease is fresh. */
  restore(): void {
    if (this.stopping || !this.lease.restore(performance.now())) return;
    this.armLapse();
    this.reconcile();
  }

  async stop(deadline: number): Promise<void> {
    this.stopping = true;
    this.abort.abort();
    this.subscriptions?.unsubscribe();
    clearTimeout(this.retryTimer);
    clearTimeout(this.lapseTimer);
    this.target.clear();
    const drainMs = shutdownDrainMs(this.config.drainTimeoutMs, deadline);
    const cut = setTimeout(this.cutDrains, drainMs);
    cut.unref();
    // Releasing and destroying the session get half of what remains after the drains, the rest
    // is kept for deregistering: a slow agent must not keep the instance registered. Requests
    // sent by then land even if their answers come later.
    const releaseBy = deadline - (deadline - Date.now() - drainMs) / 2;
    this.stopRuns();
    await withDeadline(this.idle(), releaseBy - Date.now());
    clearTimeout(cut);
    const session = this.session;
    this.session = undefined;
    if (session) await withDeadline(this.client.destroySession(session), releaseBy - Date.now());
    await withDeadline(this.prefixLoop, releaseBy - Date.now());
  }

  private onPass(sentAt: number): void {
    if (this.stopping) return;
    // A pass that comes after the lease ran out (its timer not run yet, e.g. a busy loop) lapses
    // it first: owns() may have said false already, so every partition is acquired again.
    const { lapsed, freshened } = this.lease.pass(sentAt, performance.now());
    this.armLapse();
    if (lapsed) this.onLapse();
    else if (freshened) this.reconcile();
  }

  /**
   * Node's timers may fire a little before `performance.now()` reaches their delay (they count
   * from the loop's cached time): one that finds the lease still fresh waits out the rest.
   */
  private armLapse(): void {
    clearTimeout(this.lapseTimer);
    const endsAt = this.lease.endsAt;
    if (endsAt === undefined) return;
    this.lapseTimer = setTimeout(
      () => {
        if (this.lease.expire(performance.now())) this.onLapse();
        else this.armLapse();
      },
      Math.max(0, endsAt - performance.now()),
    );
    this.lapseTimer.unref();
  }

  /** No pass confirmed for a lease: every run stops; each lock is released, then asked again. */
  private onLapse(): void {
    const dropped = this.stopRuns();
    if (dropped.length > 0) {
      this.logger.warn(
        `The lease of "${this.serviceId}" lapsed (no TTL pass confirmed for ${this.lease.ms} ms): released partitions ${dropped.join(', ')} until Consul grants them again`,
      );
    }
    this.reconcile();
  }

  /** The agent lost the registration, and the session and its locks with it. */
  private onLost(): void {
    if (this.stopping) return;
    this.lease.lose();
    this.session = undefined;
    // Every other instance's session and locks went with the agent's state, and with them the
    // lock-delay that would have held a freed key; an owner learns it only at its next
    // heartbeat. Its last confirmed pass was sent before the loss, so one lease from now it has
    // let go, by that heartbeat or by its lease lapsing; until then nothing is asked.
    this.acquireFrom = performance.now() + this.lease.ms;
    const dropped = this.stopRuns();
    if (dropped.length > 0) {
      this.logger.warn(
        `The agent lost "${this.serviceId}" and its session: released partitions ${dropped.join(', ')} until Consul grants them again`,
      );
    }
  }

  /** Stops the runs that no longer apply, then asks for the locks the table wants. */
  private reconcile(): void {
    this.stopRuns();
    this.acquireWanted();
  }

  /**
   * Stops every run that no longer applies (lease not fresh or of an older epoch, the table moved
   * it away, shutdown), tells the service, and returns them; their locks go on to drain and
   * release.
   */
  private stopRuns(): number[] {
    const now = performance.now();
    const stopped: number[] = [];
    for (const [p, lock] of this.locks) {
      if (lock.state !== 'running') continue;
      if (this.wanted(p) && this.lease.isFresh(now) && lock.request!.epoch === this.lease.epoch) {
        continue;
      }
      this.drain(p, lock);
      stopped.push(p);
    }
    if (stopped.length > 0) this.changed([], ascending(stopped));
    return ascending(stopped);
  }

  private acquireWanted(): void {
    if (this.stopping || this.registration.state !== 'registered') return;
    const now = performance.now();
    if (!this.lease.isFresh(now)) return;
    if (now < this.acquireFrom) return this.retryIn(this.acquireFrom - now);
    const wanted = ascending(this.target).filter((p) => this.stateOf(p) === 'free');
    if (wanted.length === 0) return;
    const session = this.session;
    if (!session) return this.openSession();
    for (const p of wanted) this.acquire(p, session);
  }

  private acquire(partition: number, session: string): void {
    const lock = this.lockOf(partition);
    const request = { epoch: this.lease.epoch, session };
    this.move(lock, 'acquire');
    lock.request = request;
    this.track(
      (async () => {
        let attempt: LockAttempt;
        try {
          attempt = await this.client.lock(this.key(partition), session, this.serviceId);
        } catch (error) {
          // The lock may have been granted all the same: the prefix shows it, and it is released.
          this.move(lock, 'refused');
          if (!this.client.closed) {
            this.logger.warn(
              `Could not acquire partition ${partition}: ${(error as Error).message}`,
            );
          }
          return this.retryIn(SESSION_RETRY_MS);
        }
        if (attempt.acquired) return this.granted(partition, lock, attempt);
        this.move(lock, 'refused');
        if (INVALID_SESSION.test(attempt.reason)) {
          if (this.session === session) this.session = undefined;
          this.retryIn(0);
        } else if (LOCK_DELAY.test(attempt.reason)) {
          // The prefix does not show when a lock-delay ends: asked again within a second of it
          // (a crashed owner's partitions are re-owned within ttl + lockDelay + 1 s).
          this.retryIn(Math.min(SESSION_RETRY_MS, this.config.lock.lockDelayMs));
        } else {
          // Held by another session: the prefix shows its release.
          this.retryIn(this.config.lock.lockDelayMs);
        }
      })(),
    );
  }

  private granted(
    partition: number,
    lock: PartitionLock,
    attempt: { lockIndex: number; modifyIndex: number },
  ): void {
    lock.modifyIndex = attempt.modifyIndex;
    const event = grantEvent(
      lock.request!,
      {
        epoch: this.lease.epoch,
        session: this.session ?? '',
        wanted: this.wanted(partition),
        leaseFresh: this.lease.isFresh(performance.now()),
        lastToken: lock.lastToken,
        // An answer delayed on the wire: the prefix already showed the key past this grant, taken
        // from the session (invalidated, released) — no later change will tell again.
        lostSince:
          attempt.modifyIndex <= this.prefixIndex &&
          this.holders.get(partition) !== lock.request!.session,
      },
      attempt.lockIndex,
    );
    this.move(lock, event);
    if (event === 'undo') return this.release(partition, lock);
    lock.token = lock.lastToken = attempt.lockIndex;
    this.workers.start(partition, attempt.lockIndex);
    this.changed([partition], []);
  }

  /**
   * `running` → `draining`: handlers aborted and awaited (up to `drainTimeoutMs`, or until
   * shutdown stops waiting), then the lock released.
   */
  private drain(partition: number, lock: PartitionLock): void {
    this.move(lock, 'stop');
    lock.token = undefined;
    const drained = this.workers.release(partition, this.config.drainTimeoutMs);
    this.track(
      (async () => {
        await Promise.race([drained, this.drainCut]);
        this.move(lock, 'drained');
        this.release(partition, lock);
      })(),
    );
  }

  /**
   * `releasing` → `free`: `?release=` (no lock-delay follows), retried while it fails; a lock of
   * a session that is gone went with it.
   */
  private release(partition: number, lock: PartitionLock): void {
    const session = lock.request?.session;
    this.track(
      (async () => {
        let warned = false;
        while (session !== undefined && session === this.session && !this.client.closed) {
          try {
            await this.client.unlock(this.key(partition), session);
            break;
          } catch (error) {
            if (!warned && !this.client.closed) {
              this.logger.warn(
                `Could not release partition ${partition}: ${(error as Error).message}`,
              );
            }
            warned = true;
            await abortableDelay(SESSION_RETRY_MS, this.client.closeSignal);
          }
        }
        this.move(lock, 'released');
        lock.request = undefined;
        this.reconcile();
      })(),
    );
  }

  /** `index`: the answer's `X-Consul-Index`; a lock taken after it is not in the answer yet. */
  private onKeys(entries: LockEntry[], index: number): void {
    // The index went backwards (a restarted agent lost its state): every lock we recorded
    // carries an index from before, so compare them all with this answer.
    if (index < this.prefixIndex) for (const lock of this.locks.values()) lock.modifyIndex = 0;
    this.prefixIndex = index;
    const holders = new Map<number, string | undefined>();
    for (const entry of entries) {
      const partition = Number(entry.key.slice(this.keyPrefix.length));
      if (Number.isInteger(partition)) holders.set(partition, entry.session);
    }
    this.holders = holders;
    const lost: number[] = [];
    for (const [p, lock] of this.locks) {
      if (lock.modifyIndex > index) continue;
      const holder = holders.get(p);
      if (lock.state === 'running' && holder !== lock.request!.session) {
        this.drain(p, lock);
        lost.push(p);
      } else if (lock.state === 'free' && holder !== undefined && holder === this.session) {
        // Granted in an answer that never came back (the request failed on the way back).
        this.move(lock, 'stray');
        lock.request = { epoch: this.lease.epoch, session: holder };
        this.release(p, lock);
      }
    }
    if (lost.length > 0) {
      this.logger.warn(`Lost the locks of partitions ${lost.join(', ')}; their handlers stop`);
      this.changed([], ascending(lost));
    }
    if (lost.length > 0 || [...this.target].some((p) => !holders.get(p))) this.reconcile();
  }

  /** The table gives it to this instance, and no shutdown began. */
  private wanted(partition: number): boolean {
    return !this.stopping && this.target.has(partition);
  }

  private stateOf(partition: number): PartitionLockState {
    return this.locks.get(partition)?.state ?? 'free';
  }

  private lockOf(partition: number): PartitionLock {
    let lock = this.locks.get(partition);
    if (!lock) {
      lock = { state: 'free', lastToken: 0, modifyIndex: 0 };
      this.locks.set(partition, lock);
    }
    return lock;
  }

  private move(lock: PartitionLock, event: PartitionLockEvent): void {
    lock.state = nextPartitionLockState(lock.state, event);
  }

  /** One session at a time is being created; acquisitions follow when it is. */
  private openSession(): void {
    if (this.opening) return;
    this.opening = (async () => {
      try {
        this.session = await this.client.createSession({
          name: `athomic-sharding:${this.serviceId}`,
          serviceCheckId: serviceCheckId(this.serviceId),
          lockDelay: this.config.lock.lockDelay,
        });
      } catch (error) {
        if (!this.client.closed) {
          this.logger.warn(`Could not create the sharding session: ${(error as Error).message}`);
        }
        this.retryIn(SESSION_RETRY_MS);
      }
    })().finally(() => {
      this.opening = undefined;
      this.acquireWanted();
    });
    this.track(this.opening);
  }

  /** One retry timer: a sooner retry replaces a later one. */
  private retryIn(ms: number): void {
    const at = performance.now() + ms;
    if (this.stopping || (this.retryTimer && this.retryAt <= at)) return;
    clearTimeout(this.retryTimer);
    this.retryAt = at;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.reconcile();
    }, ms);
    this.retryTimer.unref();
  }

  /** Resolves once no acquisition, drain or release is under way. */
  private async idle(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }

  private key(partition: number): string {
    return `${this.keyPrefix}${partition}`;
  }

  private track(work: Promise<unknown>): void {
    const tracked = work.finally(() => this.pending.delete(tracked));
    this.pending.add(tracked);
  }
}
