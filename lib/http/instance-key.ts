/** What an instance is known by: its node and its serviceId. */
export interface InstanceRef {
  serviceId: string;
  node: string;
}

/**
 * An instance's identity: Consul's service IDs are unique per agent only (services registered by
 * agent config on every node commonly use the name as the ID), so the node is part of it.
 */
export function instanceKey(instance: InstanceRef): string {
  return `${instance.node}\u0000${instance.serviceId}`;
}
