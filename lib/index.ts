export { CONSUL_CLIENT, DISCOVERY_PROVIDER, DISCOVERY_SETTINGS } from './discovery.constants.js';
export { DiscoveryModule } from './discovery.module.js';
export type { DiscoveryModuleAsyncOptions } from './discovery.module-definition.js';
export { DiscoveryService } from './discovery.service.js';
export { ConsulClient } from './consul/consul.client.js';
export { ConsulDiscoveryProvider } from './consul/consul-discovery.provider.js';
export { DiscoverySettings } from './settings/discovery.settings.js';
export type {
  DiscoveryModuleOptions,
  DiscoveryOptionsFactory,
} from './settings/discovery-module-options.interface.js';
export type {
  DiscoveryQuery,
  HealthCheck,
  ServiceDiscoveryProtocol,
  ServiceInstance,
  ServiceRegistration,
} from './protocol/service-discovery.protocol.js';
export {
  ConsulResponseError,
  DiscoveryError,
  DiscoverySettingsError,
  DiscoveryTimeoutError,
  DiscoveryUnavailableError,
} from './errors/index.js';
