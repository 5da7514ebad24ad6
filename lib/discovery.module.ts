import { Module } from '@nestjs/common';
import { ConsulDiscoveryProvider } from './consul/consul-discovery.provider.js';
import { CONSUL_CLIENT, DISCOVERY_PROVIDER, DISCOVERY_SETTINGS } from './discovery.constants.js';
import { ConfigurableDiscoveryModule } from './discovery.module-definition.js';
import {
  consulClientProvider,
  discoveryProvider,
  discoverySettingsProvider,
} from './discovery.providers.js';
import { DiscoveryService } from './discovery.service.js';
import { WatchRegistry } from './watch/watch.registry.js';

@Module({
  providers: [
    discoverySettingsProvider,
    consulClientProvider,
    WatchRegistry,
    ConsulDiscoveryProvider,
    discoveryProvider,
    DiscoveryService,
  ],
  exports: [
    DISCOVERY_SETTINGS,
    CONSUL_CLIENT,
    DISCOVERY_PROVIDER,
    ConsulDiscoveryProvider,
    DiscoveryService,
  ],
})
export class DiscoveryModule extends ConfigurableDiscoveryModule {}
