import { Module } from '@nestjs/common';
import { CONSUL_CLIENT, DISCOVERY_PROVIDER, DISCOVERY_SETTINGS } from './discovery.constants.js';
import { ConfigurableDiscoveryModule } from './discovery.module-definition.js';
import {
  consulClientProvider,
  discoveryMetricsProvider,
  discoveryProvider,
  discoverySettingsProvider,
} from './discovery.providers.js';
import { DiscoveryService } from './discovery.service.js';
import { DiscoveryHttpClient } from './http/discovery-http.client.js';
import { ConsulDiscoveryProvider } from './provider/consul-discovery.provider.js';
import { ConsulRegistrar } from './provider/consul.registrar.js';
import { SelfRegistration } from './registration/self-registration.js';
import { ShardingService } from './sharding/sharding.service.js';
import { WatchRegistry } from './watch/watch.registry.js';

@Module({
  providers: [
    discoverySettingsProvider,
    discoveryMetricsProvider,
    consulClientProvider,
    WatchRegistry,
    ConsulRegistrar,
    ConsulDiscoveryProvider,
    discoveryProvider,
    SelfRegistration,
    ShardingService,
    DiscoveryHttpClient,
    DiscoveryService,
  ],
  exports: [
    DISCOVERY_SETTINGS,
    CONSUL_CLIENT,
    DISCOVERY_PROVIDER,
    ConsulDiscoveryProvider,
    DiscoveryService,
    ShardingService,
    DiscoveryHttpClient,
  ],
})
export class DiscoveryModule extends ConfigurableDiscoveryModule {}
