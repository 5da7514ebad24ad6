import { DiscoverySettingsError } from '../errors/discovery-settings.error.js';
import {
  handlerMessage,
  partitionOutOfRangeMessage,
  shardKeyMessage,
  shardingOffMessage,
} from '../errors/error-messages.js';

const SUBJECT = 'ShardingService arguments';

// The hot path (a key per message): plain checks, no class-validator.

export function checkShardKey(key: unknown): string {
  if (typeof key === 'string') return key;
  throw new DiscoverySettingsError([{ path: 'key', reasons: [shardKeyMessage()] }], SUBJECT);
}

export function checkPartition(partition: unknown, partitions: number): number {
  if (
    Number.isInteger(partition) &&
    (partition as number) >= 0 &&
    (partition as number) < partitions
  ) {
    return partition as number;
  }
  throw new DiscoverySettingsError(
    [{ path: 'partition', reasons: [partitionOutOfRangeMessage(partitions)] }],
    SUBJECT,
  );
}

export function checkHandler<T>(handler: T): T {
  if (typeof handler === 'function') return handler;
  throw new DiscoverySettingsError([{ path: 'handler', reasons: [handlerMessage()] }], SUBJECT);
}

/** Sharding methods on a module without `sharding` settings. */
export function shardingOff(): DiscoverySettingsError {
  return new DiscoverySettingsError(
    [{ path: 'sharding.partitions', reasons: [shardingOffMessage()] }],
    SUBJECT,
  );
}
