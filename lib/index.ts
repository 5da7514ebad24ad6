// The public API: exactly these names (the folder barrels below may hold more).
export { CONSUL_CLIENT, DISCOVERY_PROVIDER, DISCOVERY_SETTINGS } from './discovery.constants.js';
export { DiscoveryModule } from './discovery.module.js';
export type { DiscoveryModuleAsyncOptions } from './discovery.module-definition.js';
export { DiscoveryService } from './discovery.service.js';
export type { RegistrationState } from './registration/registration-state.js';
export type { DiscoveryStatus, SelfStatus } from './registration/registration-status.js';
export { DiscoveryHttpClient, type DiscoveryRequestInit } from './http/discovery-http.client.js';
export {
  ShardingService,
  type PartitionHandler,
  type ShardAssignment,
} from './sharding/sharding.service.js';
export { ConsulClient } from './consul/consul.client.js';
export { ConsulDiscoveryProvider } from './provider/consul-discovery.provider.js';
export {
  DiscoverySettings,
  type DiscoveryModuleOptions,
  type DiscoveryOptionsFactory,
} from './settings/index.js';
export type {
  DiscoveryQuery,
  HealthCheck,
  ServiceDiscoveryProtocol,
  ServiceInstance,
  ServiceRegistration,
} from './protocol/index.js';
export {
  ConsulResponseError,
  DiscoveryError,
  DiscoverySettingsError,
  DiscoveryTimeoutError,
  DiscoveryUnavailableError,
  NoInstanceError,
} from './errors/index.js';
