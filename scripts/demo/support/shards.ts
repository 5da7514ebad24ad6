import { isAssignmentMessage, type AssignmentMessage, type InstanceProcess } from './children.js';
import { info, table } from './output.js';

/** Who owns what: the partition → serviceId view the demo prints, from the instances' reports. */
export type Owners = Map<number, string>;

interface Watched {
  readonly instance: InstanceProcess;
  latest?: AssignmentMessage;
}

interface Waiter {
  readonly alive: readonly string[];
  readonly resolve: (at: number) => void;
}

/**
 * The orchestrator's live view of the table: every instance reports each change of its owned
 * partitions over IPC; a running instance's last report is what it owns. "Covered" = the running
 * instances' partitions are exactly 0..P-1, each owned once, spread over exactly the expected
 * instances.
 */
export class ShardBoard {
  private readonly watched = new Map<string, Watched>();
  private readonly waiters = new Set<Waiter>();
  private log: {
    at: number;
    serviceId: string;
    released: number[];
    acquired: number[];
    owns: number;
  }[] = [];
  private since = Date.now();

  constructor(private readonly partitions: number) {}

  /** Follows `instance`'s reports (attach before it can send one). */
  follow(serviceId: string, instance: InstanceProcess): void {
    const entry: Watched = { instance };
    this.watched.set(serviceId, entry);
    instance.child.on('message', (message: unknown) => {
      if (!isAssignmentMessage(message)) return;
      entry.latest = message;
      const { acquired, released } = message;
      const last = this.log.at(-1);
      const at = Date.now() - this.since;
      if (
        last?.serviceId === serviceId &&
        acquired.length === 0 &&
        last.acquired.length === 0 &&
        at - last.at < 50
      ) {
        // Exclusive mode reports each released lock on its own: one line per burst.
        last.released.push(...released);
        last.owns = message.owned.length;
      } else if (acquired.length + released.length > 0) {
        this.log.push({
          at,
          serviceId,
          acquired,
          released: [...released],
          owns: message.owned.length,
        });
      }
      this.check();
    });
    void instance.exited.then(() => this.check());
  }

  /** Starts a new event log whose times count from now (the fault). */
  mark(): number {
    this.since = Date.now();
    this.log = [];
    return this.since;
  }

  /** Resolves with the Date.now() at which the running owners were exactly `alive` and covered P. */
  covered(alive: readonly string[]): Promise<number> {
    return new Promise((resolve) => {
      const waiter: Waiter = { alive, resolve };
      this.waiters.add(waiter);
      this.check();
    });
  }

  /** partition → owner, from the running instances' last reports. */
  owners(): Owners {
    const owners: Owners = new Map();
    for (const [serviceId, { instance, latest }] of this.watched) {
      if (!instance.running || !latest) continue;
      for (const p of latest.owned) owners.set(p, serviceId);
    }
    return owners;
  }

  tokens(serviceId: string): Record<number, number> {
    return this.watched.get(serviceId)?.latest?.tokens ?? {};
  }

  /** Prints what happened since mark(), one line per report that changed something. */
  printLog(): void {
    for (const { at, serviceId, acquired, released, owns } of this.log) {
      const parts = [
        released.length > 0 ? `released ${ranges(released)}` : '',
        acquired.length > 0 ? `acquired ${ranges(acquired)}` : '',
      ].filter(Boolean);
      info(`  +${String(at).padStart(5)} ms  ${serviceId}: ${parts.join(', ')} → owns ${owns}`);
    }
  }

  /** The table: one row per running instance, then the 32 partitions as a grid of owners. */
  printTable(previous?: Owners): Owners {
    const owners = this.owners();
    const rows: string[][] = [];
    for (const [serviceId, { instance, latest }] of this.watched) {
      if (!instance.running) continue;
      const owned = latest?.owned ?? [];
      const tokens = Object.values(this.tokens(serviceId));
      const gained = previous ? owned.filter((p) => previous.get(p) !== serviceId) : [];
      rows.push([
        serviceId,
        String(owned.length),
        ranges(owned),
        gained.length > 0 ? `+${gained.length}: ${ranges(gained)}` : '',
        tokenRange(tokens),
      ]);
    }
    table(['instance', 'owns', 'partitions', 'moved here', 'fencing tokens'], rows);
    const label = (p: number): string => owners.get(p)?.replace(/^.*-/, '') ?? '·';
    for (let start = 0; start < this.partitions; start += 16) {
      const cells = Array.from({ length: Math.min(16, this.partitions - start) }, (_, i) =>
        label(start + i).padStart(2),
      );
      info(`p${String(start).padStart(2)}–${start + cells.length - 1}: ${cells.join(' ')}`);
    }
    return owners;
  }

  /** Partitions whose owner differs between two views, grouped as "from → to". */
  static moves(before: Owners, after: Owners): string[] {
    const groups = new Map<string, number[]>();
    for (const [p, to] of after) {
      const from = before.get(p);
      if (from === to) continue;
      const key = `${from ?? '(none)'} → ${to}`;
      groups.set(key, [...(groups.get(key) ?? []), p]);
    }
    return [...groups].map(([key, ps]) => `${key}: ${ps.length} (${ranges(ps)})`);
  }

  private check(): void {
    if (this.waiters.size === 0) return;
    const owners = this.owners();
    const holders = new Set(owners.values());
    let owned = 0;
    for (const [, { instance, latest }] of this.watched) {
      if (instance.running && latest) owned += latest.owned.length;
    }
    for (const waiter of this.waiters) {
      const exact =
        owners.size === this.partitions &&
        owned === this.partitions &&
        holders.size === waiter.alive.length &&
        waiter.alive.every((id) => holders.has(id));
      if (!exact) continue;
      this.waiters.delete(waiter);
      waiter.resolve(Date.now());
    }
  }
}

function tokenRange(tokens: number[]): string {
  if (tokens.length === 0) return '';
  const [low, high] = [Math.min(...tokens), Math.max(...tokens)];
  return low === high ? String(low) : `${low}–${high}`;
}

/** [0,1,2,5,7,8] → "0–2,5,7–8". */
export function ranges(partitions: readonly number[]): string {
  const sorted = [...partitions].sort((a, b) => a - b);
  const out: string[] = [];
  for (let i = 0; i < sorted.length; i++) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    out.push(j === i ? String(sorted[i]) : `${sorted[i]}–${sorted[j]}`);
    i = j;
  }
  return out.join(',');
}
