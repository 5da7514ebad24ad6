import { startChildApp, type ChildApp, type ChildEvent } from './child-app.harness.js';

// Sharded child apps (test/support/fixtures/child-app.mjs with `sharding` in its options) and
// what their own events say: the last assignment of each, who owns what, the ownership runs
// (`owning`/`owns`) and the fenced store's writes. No library import: the toolkit also runs
// compiled for the benchmark (tsconfig.toolkit.json), the specs compute tables from lib/.

export interface ShardChildSettings {
  /** Agent address of the child. */
  host: string;
  port: number;
  service: string;
  serviceId: string;
  /** The service port it registers (nothing listens there). */
  servicePort: number;
  mode: 'cooperative' | 'exclusive';
  partitions: number;
  ttl?: string;
  settleMs?: number;
  handoffDelayMs?: number;
  lockDelay?: string;
  drainTimeoutMs?: number;
  shutdownTimeoutMs?: number;
  fencedWriter?: boolean;
  maxLifeMs?: number;
}

export interface ShardChild {
  readonly serviceId: string;
  readonly app: ChildApp;
}

export interface Assignment {
  owned: number[];
  acquired: number[];
  released: number[];
  members: string[];
  version: number;
  t: number;
}

/** The small settings of the sharding specs (README "Sharding"), overridable. */
export function startShardChild(s: ShardChildSettings): ShardChild {
  const options = {
    consul: { host: s.host, port: s.port, timeoutMs: 2_000 },
    service: { name: s.service, id: s.serviceId, address: '127.0.0.1', port: s.servicePort },
    healthCheck: { ttl: s.ttl ?? '3s', deregisterCriticalServiceAfter: '1m' },
    retry: { maxAttempts: 3, initialDelayMs: 50, maxDelayMs: 500 },
    shutdownTimeoutMs: s.shutdownTimeoutMs ?? 5_000,
    watch: { waitTime: '10s' },
    sharding: {
      partitions: s.partitions,
      mode: s.mode,
      settleMs: s.settleMs ?? 200,
      handoffDelayMs: s.handoffDelayMs ?? 100,
      drainTimeoutMs: s.drainTimeoutMs ?? 1_000,
      lock: { lockDelay: s.lockDelay ?? '1s' },
    },
  };
  const app = startChildApp({
    options,
    maxLifeMs: s.maxLifeMs ?? 120_000,
    shard: { fencedWriter: s.fencedWriter ?? false },
  });
  return { serviceId: s.serviceId, app };
}

export function lastAssignment(child: ShardChild): Assignment | undefined {
  return child.app.last('assignment') as unknown as Assignment | undefined;
}

/** The owner of every partition in the table last in force on the child (`null`: none). */
export function lastTable(child: ShardChild): (string | null)[] | undefined {
  return child.app.last('table')?.owners as (string | null)[] | undefined;
}

export interface Coverage {
  /** Every partition owned by exactly one of the children. */
  complete: boolean;
  missing: number[];
  doubled: number[];
  /** serviceId → owned, from each child's last assignment. */
  owned: Map<string, number[]>;
  /** The latest `t` among those assignments (the moment the last one changed). */
  lastChangeAt: number;
}

/** Who owns what, per the last `assignment` event of each of `children`. */
export function coverage(children: readonly ShardChild[], partitions: number): Coverage {
  const count = new Array<number>(partitions).fill(0);
  const owned = new Map<string, number[]>();
  let lastChangeAt = 0;
  for (const child of children) {
    const a = lastAssignment(child);
    owned.set(child.serviceId, a?.owned ?? []);
    if (a) lastChangeAt = Math.max(lastChangeAt, a.t);
    for (const p of a?.owned ?? []) count[p]++;
  }
  const missing = count.flatMap((c, p) => (c === 0 ? [p] : []));
  const doubled = count.flatMap((c, p) => (c > 1 ? [p] : []));
  return {
    complete: missing.length === 0 && doubled.length === 0,
    missing,
    doubled,
    owned,
    lastChangeAt,
  };
}

/** One handler run of a partition on one child, from its own clock. */
export interface OwnershipRun {
  serviceId: string;
  p: number;
  token?: number;
  from: number;
  /** The last owns(p) === true the child saw; for a run still open, `openUntil`. */
  lastTrue: number;
  open: boolean;
}

/**
 * Every ownership run of every child: closed ones from `owns`, open ones (an `owning` with no
 * `owns` yet: the child is still running it, or died in it) up to `openUntil(child)`.
 */
export function ownershipRuns(
  children: readonly ShardChild[],
  openUntil: (child: ShardChild) => number,
): OwnershipRun[] {
  const runs: OwnershipRun[] = [];
  for (const child of children) {
    const closed = new Map<string, number>();
    for (const e of child.app.all('owns')) {
      const key = `${e.p as number}@${e.from as number}`;
      closed.set(key, (closed.get(key) ?? 0) + 1);
      runs.push({
        serviceId: child.serviceId,
        p: e.p as number,
        token: e.token as number | undefined,
        from: e.from as number,
        lastTrue: e.lastTrue as number,
        open: false,
      });
    }
    for (const e of child.app.all('owning')) {
      const key = `${e.p as number}@${e.from as number}`;
      const n = closed.get(key) ?? 0;
      if (n > 0) {
        closed.set(key, n - 1);
        continue;
      }
      runs.push({
        serviceId: child.serviceId,
        p: e.p as number,
        token: e.token as number | undefined,
        from: e.from as number,
        lastTrue: openUntil(child),
        open: true,
      });
    }
  }
  return runs;
}

/** Pairs of runs of one partition, on different children, whose [from, lastTrue] intersect. */
export function overlappingRuns(runs: readonly OwnershipRun[]): [OwnershipRun, OwnershipRun][] {
  const byPartition = new Map<number, OwnershipRun[]>();
  for (const run of runs) {
    let list = byPartition.get(run.p);
    if (!list) byPartition.set(run.p, (list = []));
    list.push(run);
  }
  const overlaps: [OwnershipRun, OwnershipRun][] = [];
  for (const list of byPartition.values()) {
    list.sort((a, b) => a.from - b.from);
    for (let i = 0; i < list.length; i++) {
      for (let j = i + 1; j < list.length && list[j].from <= list[i].lastTrue; j++) {
        if (list[j].serviceId !== list[i].serviceId) overlaps.push([list[i], list[j]]);
      }
    }
  }
  return overlaps;
}

export interface FencedWrite {
  serviceId: string;
  p: number;
  token: number;
  accepted: boolean;
  /** The store's write count after this write (accepted) or as read (refused). */
  seq: number;
  /** When the write began (its read of the store); `t`: when it completed. */
  startedAt: number;
  /** The agent incarnation whose owners share these keys (its node ID). */
  store: string;
  t: number;
}

export function fencedWrites(children: readonly ShardChild[]): FencedWrite[] {
  return children.flatMap((child) =>
    child.app.all('write').map((e: ChildEvent) => ({
      serviceId: child.serviceId,
      p: e.p as number,
      token: e.token as number,
      accepted: e.accepted as boolean,
      seq: e.seq as number,
      startedAt: e.startedAt as number,
      store: e.store as string,
      t: e.t,
    })),
  );
}

/**
 * Accepted writes whose token is lower than one the store accepted before it, in the store's own
 * order (its write count, `seq`; CAS makes every accepted write follow exactly one other), per
 * key (`store`: the agent incarnation the writer's ownership began on).
 * `wipes`: when the store was emptied (a restarted dev agent: a moment while no agent answers);
 * each starts a new history. Writes are split by time, not by `seq` going back to 1: a
 * write the store took whose answer never arrived (aborted) is missing from the children's logs.
 */
export function staleAcceptedWrites(
  writes: readonly FencedWrite[],
  wipes: readonly number[] = [],
): FencedWrite[] {
  const history = new Map<string, FencedWrite[]>();
  for (const w of writes) {
    if (!w.accepted) continue;
    // Begun on the old agent, finished on the new one: its compare-and-set index came from the
    // old store and can match an unrelated index of the new one, so its place in either history
    // is unknown (tokens do not span a wiped store anyway).
    if (wipes.some((at) => w.startedAt < at && w.t > at)) continue;
    const epoch = wipes.filter((at) => at <= w.t).length;
    const key = `${w.store}/${w.p}/${epoch}`;
    let list = history.get(key);
    if (!list) history.set(key, (list = []));
    list.push(w);
  }
  const stale: FencedWrite[] = [];
  for (const list of history.values()) {
    list.sort((a, b) => a.seq - b.seq);
    let highest = 0;
    for (const w of list) {
      if (w.token < highest) stale.push(w);
      highest = Math.max(highest, w.token);
    }
  }
  return stale;
}
