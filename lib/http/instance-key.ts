/** What an instance is known by: its node and its serviceId (and where it answers, if known). */
export interface InstanceRef {
  serviceId: string;
  node: string;
  address?: string;
  port?: number;
}

/**
 * An instance's identity: Consul's service IDs are unique per agent only (services registered by
 * agent config on every node commonly use the name as the ID), so the node is part of it.
 */
export function instanceKey(instance: InstanceRef): string {
  return `${instance.node}\u0000${instance.serviceId}`;
}

/**
 * Where this life of an instance answers: a process restarted under the same identity on another
 * port (or address) is a new life, with none of the old one's failures.
 */
export function instanceEndpoint(instance: InstanceRef): string {
  return `${instance.address}:${instance.port}`;
}
