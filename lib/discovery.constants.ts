/** Injection token of the `ServiceDiscoveryProtocol` (bound to `ConsulDiscoveryProvider`). */
export const DISCOVERY_PROVIDER = Symbol('DISCOVERY_PROVIDER');
/** Injection token of the shared `ConsulClient`. */
export const CONSUL_CLIENT = Symbol('CONSUL_CLIENT');
/** Injection token of the validated, defaulted `DiscoverySettings`. */
export const DISCOVERY_SETTINGS = Symbol('DISCOVERY_SETTINGS');
