export { DiscoverySettings } from './discovery.settings.js';
export type {
  DiscoveryModuleOptions,
  DiscoveryOptionsFactory,
} from './discovery-module-options.interface.js';
