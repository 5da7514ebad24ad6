// `@athomic/discovery/testing`: the in-memory double of DiscoveryModule.
export {
  DiscoveryTestingModule,
  type DiscoveryTestingModuleOptions,
} from './discovery-testing.module.js';
export { InMemoryDiscovery } from './in-memory-discovery.js';
export type { InMemoryInstance } from './in-memory.arguments.js';
