/** Injection token of the `ServiceDiscoveryProtocol` (bound to `ConsulDiscoveryProvider`). */
export const DISCOVERY_PROVIDER = Symbol('DISCOVERY_PROVIDER');
/** Injection token of the shared `ConsulClient`. */
export const CONSUL_CLIENT = Symbol('CONSUL_CLIENT');
/** Injection token of the validated, defaulted `DiscoverySettings`. */
export const DISCOVERY_SETTINGS = Symbol('DISCOVERY_SETTINGS');
/** Internal token: what `@athomic/discovery/schedule` runs here, for the health details. */
export const CLUSTER_JOBS = Symbol('CLUSTER_JOBS');
/** Provided under `CLUSTER_JOBS` by `ClusterScheduleModule`. */
export interface RunningJobs {
  /** The `@ClusterCron` jobs this instance runs now, sorted. */
  running(): string[];
}
