import { withDeadline } from '../resilience/with-deadline.js';
import type { ShardingSettings } from '../settings/discovery.settings.js';
import { ascending, type Ownership, type OwnershipChanged } from './ownership.js';
import type { PartitionWorkers } from './partition-workers.js';

/**
 * Ownership = the table. Lost partitions are released at once (handlers aborted, awaited up to
 * `drainTimeoutMs`); gained ones start `handoffDelayMs` later, so the loser has stopped first.
 */
export class CooperativeOwnership implements Ownership {
  private readonly current = new Set<number>();
  private handoff?: NodeJS.Timeout;
  private readonly draining = new Set<Promise<void>>();

  constructor(
    private readonly settings: ShardingSettings,
    private readonly workers: PartitionWorkers,
    private readonly changed: OwnershipChanged,
  ) {}

  start(): void {
    // Nothing to follow: the table alone decides.
  }

  assign(target: readonly number[]): void {
    const wanted = new Set(target);
    const released = ascending([...this.current].filter((p) => !wanted.has(p)));
    for (const p of released) {
      this.current.delete(p);
      this.drain(p, this.settings.drainTimeoutMs);
    }
    if (released.length > 0) this.changed([], released);
    clearTimeout(this.handoff);
    const gained = target.filter((p) => !this.current.has(p));
    if (gained.length === 0) return;
    this.handoff = setTimeout(() => {
      for (const p of gained) {
        this.current.add(p);
        this.workers.start(p);
      }
      this.changed(gained, []);
    }, this.settings.handoffDelayMs);
    this.handoff.unref();
  }

  owns(partition: number): boolean {
    return this.current.has(partition);
  }

  owned(): number[] {
    return ascending(this.current);
  }

  token(): undefined {
    return undefined;
  }

  async stop(deadline: number): Promise<void> {
    clearTimeout(this.handoff);
    const released = this.owned();
    this.current.clear();
    if (released.length > 0) this.changed([], released);
    const drainMs = Math.min(this.settings.drainTimeoutMs, deadline - Date.now());
    for (const p of released) this.drain(p, drainMs);
    await withDeadline(Promise.all(this.draining), deadline - Date.now());
  }

  private drain(partition: number, timeoutMs: number): void {
    const done = this.workers
      .release(partition, timeoutMs)
      .finally(() => this.draining.delete(done));
    this.draining.add(done);
  }
}
