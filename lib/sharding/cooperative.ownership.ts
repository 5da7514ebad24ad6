import { withDeadline } from '../resilience/with-deadline.js';
import type { ShardingSettings } from '../settings/discovery.settings.js';
import { CooperativeHandoff } from './cooperative-handoff.js';
import { shutdownDrainMs, type Ownership, type OwnershipChanged } from './ownership.js';
import type { PartitionWorkers } from './partition-workers.js';

/**
 * Ownership = the table. Lost partitions are released at once (handlers aborted, awaited up to
 * `drainTimeoutMs`); gained ones start `handoffDelayMs` after the first table that gave them, so
 * the loser has stopped first. Each partition's phase is kept by `CooperativeHandoff`; this class
 * only runs its timers and handlers.
 */
export class CooperativeOwnership implements Ownership {
  private readonly handoff = new CooperativeHandoff();
  /** One timer per batch of gains still waiting for its delay. */
  private readonly timers = new Map<number, NodeJS.Timeout>();
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
    const { released, batch } = this.handoff.table(target);
    for (const p of released) this.drain(p, this.settings.drainTimeoutMs);
    if (released.length > 0) this.changed([], released);
    if (batch === undefined) return;
    const timer = setTimeout(() => {
      this.timers.delete(batch);
      const started = this.handoff.elapsed(batch);
      for (const p of started) this.workers.start(p);
      if (started.length > 0) this.changed(started, []);
    }, this.settings.handoffDelayMs);
    timer.unref();
    this.timers.set(batch, timer);
  }

  owns(partition: number): boolean {
    return this.handoff.running(partition);
  }

  owned(): number[] {
    return this.handoff.owned();
  }

  token(): undefined {
    return undefined;
  }

  async stop(deadline: number): Promise<void> {
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    const released = this.handoff.stop();
    if (released.length > 0) this.changed([], released);
    const drainMs = shutdownDrainMs(this.settings.drainTimeoutMs, deadline);
    for (const p of released) this.drain(p, drainMs);
    await withDeadline(Promise.all(this.draining), drainMs);
  }

  private drain(partition: number, timeoutMs: number): void {
    const done = this.workers
      .release(partition, timeoutMs)
      .finally(() => this.draining.delete(done));
    this.draining.add(done);
  }
}
