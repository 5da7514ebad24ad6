import { ascending } from './ownership.js';

/**
 * Where one partition stands in cooperative mode (absent = `free`). `waiting` remembers the table
 * that gave it: its delay elapses once, counted from that table, whatever tables come after.
 */
type Phase = { readonly kind: 'waiting'; readonly batch: number } | { readonly kind: 'running' };

/** What a new table asks of the owner: handlers to stop, and the batch of gains now waiting. */
export interface TableStep {
  /** Partitions that were running and are no longer given (ascending): stop their handlers. */
  readonly released: number[];
  /** The batch whose delay starts now; `undefined` when the table gave nothing new. */
  readonly batch?: number;
}

/**
 * The cooperative handoff, per partition, with no clock or timer of its own:
 *
 * | from      | the table gives p             | the table takes p away | its batch's delay elapses |
 * |-----------|-------------------------------|------------------------|---------------------------|
 * | `free`    | `waiting` (in a new batch)     | —                      | —                         |
 * | `waiting` | stays, same batch (no restart) | `free`                 | `running` (start handlers)|
 * | `running` | stays                          | `free` (stop handlers) | —                         |
 *
 * A batch's elapsed delay applies only to the partitions still `waiting` in that batch: one
 * taken away meanwhile (or taken away and given again, in a newer batch) is not started by it.
 * `stop()` moves every partition to `free`.
 */
export class CooperativeHandoff {
  private readonly phases = new Map<number, Phase>();
  private batches = 0;

  /** A new table: `target` is everything it gives this instance. */
  table(target: readonly number[]): TableStep {
    const wanted = new Set(target);
    const released: number[] = [];
    for (const [p, phase] of this.phases) {
      if (wanted.has(p)) continue;
      this.phases.delete(p);
      if (phase.kind === 'running') released.push(p);
    }
    const gained = target.filter((p) => !this.phases.has(p));
    if (gained.length === 0) return { released: ascending(released) };
    const batch = ++this.batches;
    for (const p of gained) this.phases.set(p, { kind: 'waiting', batch });
    return { released: ascending(released), batch };
  }

  /** The delay of `batch` elapsed: its partitions still waiting start (returned, ascending). */
  elapsed(batch: number): number[] {
    const started: number[] = [];
    for (const [p, phase] of this.phases) {
      if (phase.kind !== 'waiting' || phase.batch !== batch) continue;
      this.phases.set(p, { kind: 'running' });
      started.push(p);
    }
    return ascending(started);
  }

  running(partition: number): boolean {
    return this.phases.get(partition)?.kind === 'running';
  }

  /** The running partitions, ascending. */
  owned(): number[] {
    return ascending([...this.phases].filter(([, s]) => s.kind === 'running').map(([p]) => p));
  }

  /** Shutdown: every partition `free`; returns those that were running (ascending). */
  stop(): number[] {
    const released = this.owned();
    this.phases.clear();
    return released;
  }
}
