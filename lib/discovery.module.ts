import { Module } from '@nestjs/common';
import { CONSUL_CLIENT } from './discovery.constants.js';
import { ConfigurableDiscoveryModule } from './discovery.module-definition.js';
import {
  consulClientProvider,
  discoveryCoreExports,
  discoveryCoreProviders,
  discoverySettingsProvider,
} from './discovery.providers.js';

@Module({
  providers: [discoverySettingsProvider, consulClientProvider, ...discoveryCoreProviders],
  exports: [CONSUL_CLIENT, ...discoveryCoreExports],
})
export class DiscoveryModule extends ConfigurableDiscoveryModule {}
