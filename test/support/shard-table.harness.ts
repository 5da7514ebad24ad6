import { ShardTable } from '../../lib/sharding/shard-table.js';
import {
  coverage,
  lastAssignment,
  lastTable,
  type Coverage,
  type ShardChild,
} from './shard-children.harness.js';

/** The table lib/ computes for `members` at equal weights and balanceFactor 1. */
export function shardTable(members: readonly string[], partitions: number): ShardTable {
  return new ShardTable(
    members.map((serviceId) => ({ serviceId, weight: 1 })),
    { partitions, balanceFactor: 1 },
  );
}

export interface Settled {
  table: ShardTable;
  /** The latest `t` among the children's last assignments: when the table was reached. */
  at: number;
  cover: Coverage;
}

/**
 * Settled on `members`: every child has the table of that member set in force, owns exactly
 * what it gives it, and together they own every partition once; otherwise `undefined`.
 */
export function settledOn(
  children: readonly ShardChild[],
  members: readonly string[],
  partitions: number,
): Settled | undefined {
  const sorted = [...members].sort();
  const table = shardTable(sorted, partitions);
  const owners = JSON.stringify(
    Array.from({ length: partitions }, (_, p) => table.ownerOf(p) ?? null),
  );
  for (const child of children) {
    if (JSON.stringify(lastTable(child)) !== owners) return undefined;
    const owned = lastAssignment(child)?.owned;
    if (JSON.stringify(owned) !== JSON.stringify(table.owned(child.serviceId))) return undefined;
  }
  const cover = coverage(children, partitions);
  return cover.complete ? { table, at: cover.lastChangeAt, cover } : undefined;
}
