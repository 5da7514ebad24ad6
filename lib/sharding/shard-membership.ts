import type { ServiceInstance } from '../protocol/service-discovery.protocol.js';
import type { ShardMember, ShardTableOptions } from './shard-table.js';

/** What a sharded instance publishes in its meta, so that any reader computes the same table. */
export interface ShardParameters {
  partitions: number;
  balanceFactor: number;
  weight: number;
}

const MAX_PARTITIONS = 65_536;

/**
 * The table's input from a passing set: members with their published weights (absent or invalid
 * → 1), and P and balanceFactor from the lowest serviceId that publishes valid ones (absent →
 * `fallback`), so that every reader of the same set agrees.
 */
export function shardInput(
  instances: readonly ServiceInstance[],
  fallback?: Pick<ShardParameters, 'partitions' | 'balanceFactor'>,
): { members: ShardMember[]; options: ShardTableOptions } | undefined {
  const sorted = [...instances].sort((a, b) =>
    a.serviceId < b.serviceId ? -1 : a.serviceId > b.serviceId ? 1 : 0,
  );
  const members = sorted.map((i) => ({
    serviceId: i.serviceId,
    weight: intIn(i.meta.shardWeight, 1, 1000) ?? 1,
  }));
  const publisher = sorted.find(
    (i) => intIn(i.meta.shardPartitions, 1, MAX_PARTITIONS) !== undefined,
  );
  if (publisher) {
    const balance = Number(publisher.meta.shardBalance);
    return {
      members,
      options: {
        partitions: intIn(publisher.meta.shardPartitions, 1, MAX_PARTITIONS)!,
        balanceFactor: balance >= 1 && balance <= 2 ? balance : 1,
      },
    };
  }
  return fallback ? { members, options: fallback } : undefined;
}

function intIn(value: string | undefined, min: number, max: number): number | undefined {
  if (value === undefined || !/^\d+$/.test(value)) return undefined;
  const n = Number(value);
  return n >= min && n <= max ? n : undefined;
}
