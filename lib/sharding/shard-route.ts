import { DiscoverySettingsError } from '../errors/discovery-settings.error.js';
import { shardKeyWithoutTableMessage } from '../errors/error-messages.js';
import type { ServiceInstance } from '../protocol/service-discovery.protocol.js';
import { murmur3 } from './murmur3.js';
import { shardInput } from './shard-membership.js';
import { ShardTable } from './shard-table.js';

/** The partition of a key: murmur3 x86 32-bit (seed 0) of its UTF-8 bytes, mod `partitions`. */
export function keyPartition(key: string, partitions: number): number {
  return murmur3(key) % partitions;
}

/**
 * Tables of the sets a watch hands out: a set is replaced, never changed, so each is computed
 * once, not per request.
 */
const tables = new WeakMap<readonly ServiceInstance[], ShardTable | null>();

function publishedTable(instances: readonly ServiceInstance[]): ShardTable | null {
  let table = tables.get(instances);
  if (table === undefined) {
    const input = shardInput(instances);
    table = input ? new ShardTable(input.members, input.options) : null;
    tables.set(instances, table);
  }
  return table;
}

/**
 * The serviceIds a request for `key` tries, in order: the owner of the key's partition in the
 * table the target's instances publish, then the partition's next-ranked instances. A target
 * that publishes no table cannot be routed by key.
 */
export function shardRoute(
  service: string,
  instances: readonly ServiceInstance[],
  key: string,
): string[] {
  const table = publishedTable(instances);
  if (!table) {
    throw new DiscoverySettingsError(
      [{ path: 'shardKey', reasons: [shardKeyWithoutTableMessage(service)] }],
      'DiscoveryHttpClient arguments',
    );
  }
  const partition = keyPartition(key, table.partitions);
  const owner = table.ownerOf(partition)!;
  return [owner, ...table.ranked(partition).filter((id) => id !== owner)];
}
