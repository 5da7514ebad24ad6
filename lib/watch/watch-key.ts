import type { DiscoveryQuery } from '../protocol/service-discovery.protocol.js';

/** One long-poll per name + query: the key that identifies it. */
export function watchKey(name: string, query: DiscoveryQuery = {}): string {
  return `${name}\u0000${query.tag ?? ''}\u0000${datacenterKey(query.datacenter)}`;
}

/**
 * The datacenter part of a key: `consul.datacenter`'s default (absent) and an explicit name —
 * even the empty one, the agent's own datacenter (`LOCAL_DATACENTER`) — never share a key.
 */
export function datacenterKey(datacenter: string | undefined): string {
  return datacenter === undefined ? '' : `@${datacenter}`;
}
