/**
 * Exclusive mode's lease: the time since the last confirmed TTL pass (counted from when it was
 * sent), `ttl − max(1 s, ttl/10)` long — shorter than Consul's own, so this instance stops
 * before Consul could give a partition to anyone else.
 *
 * | from      | pass (within the lease) | expire (ran out) | lose (agent lost it) | withdraw  | restore |
 * |-----------|-------------------------|------------------|----------------------|-----------|---------|
 * | fresh     | fresh (carried on)      | lapsed           | lapsed               | withdrawn | —       |
 * | lapsed    | fresh                   | —                | lapsed               | withdrawn | —       |
 * | withdrawn | withdrawn               | —                | withdrawn            | withdrawn | lapsed, then fresh if the last pass is within the lease |
 *
 * A pass that comes after a fresh lease ran out lapses it first: a late pass never revives a
 * lease `owns()` may already have seen stale. `withdrawn` is `deregisterSelf()` until
 * `registerSelf()`. Every exit from `fresh` starts a new epoch: an answer asked in an older one
 * no longer applies. Pure: the caller passes its monotonic clock's `now`.
 */
export const LEASE_STATES = ['fresh', 'lapsed', 'withdrawn'] as const;

export type LeaseState = (typeof LEASE_STATES)[number];

export class Lease {
  private current: LeaseState = 'lapsed';
  private from?: number;
  private epochs = 0;

  constructor(readonly ms: number) {}

  get state(): LeaseState {
    return this.current;
  }

  /** Increases every time the lease stops being fresh. */
  get epoch(): number {
    return this.epochs;
  }

  /** Fresh, and not run out at `now` (its expiry may not have been applied yet). */
  isFresh(now: number): boolean {
    return this.current === 'fresh' && now - this.from! < this.ms;
  }

  /** When a fresh lease runs out; `undefined` otherwise. */
  get endsAt(): number | undefined {
    return this.current === 'fresh' ? this.from! + this.ms : undefined;
  }

  /** A confirmed pass sent at `sentAt`; `true` when the lease lapsed first (it had run out). */
  pass(sentAt: number, now: number): { lapsed: boolean; freshened: boolean } {
    const lapsed = this.expire(now);
    this.from = Math.max(this.from ?? sentAt, sentAt);
    const freshened = this.current === 'lapsed' && now - this.from < this.ms;
    if (freshened) this.current = 'fresh';
    return { lapsed, freshened };
  }

  /** A fresh lease that ran out by `now` lapses; `true` when it did. */
  expire(now: number): boolean {
    if (this.current !== 'fresh' || this.isFresh(now)) return false;
    this.leave('lapsed');
    return true;
  }

  /** The agent lost the registration: whatever was fresh is not; `true` when it was fresh. */
  lose(): boolean {
    const wasFresh = this.current === 'fresh';
    this.leave(this.current === 'withdrawn' ? 'withdrawn' : 'lapsed');
    return wasFresh;
  }

  /** `deregisterSelf()`: nothing is owned until `restore()`; `true` when it was fresh. */
  withdraw(): boolean {
    const wasFresh = this.current === 'fresh';
    if (this.current !== 'withdrawn') this.leave('withdrawn');
    return wasFresh;
  }

  /** `registerSelf()`: back to lapsed, and fresh at once if the last pass is within the lease. */
  restore(now: number): boolean {
    if (this.current !== 'withdrawn') return false;
    this.current = 'lapsed';
    if (this.from !== undefined && now - this.from < this.ms) this.current = 'fresh';
    return this.current === 'fresh';
  }

  private leave(to: Exclude<LeaseState, 'fresh'>): void {
    this.current = to;
    this.epochs++;
  }
}
