import type { DiscoveryQuery } from '../protocol/service-discovery.protocol.js';

/** One long-poll per name + query: the key that identifies it. */
export function watchKey(name: string, query: DiscoveryQuery = {}): string {
  return `${name}\u0000${query.tag ?? ''}\u0000${query.datacenter ?? ''}`;
}
