import type { Provider } from '@nestjs/common';
import { ConsulClient } from './consul/consul.client.js';
import { DiscoveryMetrics } from './metrics/discovery.metrics.js';
import { ConsulDiscoveryProvider } from './provider/consul-discovery.provider.js';
import { CONSUL_CLIENT, DISCOVERY_PROVIDER, DISCOVERY_SETTINGS } from './discovery.constants.js';
import { DISCOVERY_MODULE_OPTIONS } from './discovery.module-definition.js';
import type { DiscoveryModuleOptions } from './settings/discovery-module-options.interface.js';
import type { DiscoverySettings } from './settings/discovery.settings.js';
import { createDiscoverySettings } from './settings/discovery-settings.factory.js';

/** Validation happens here, so a bad setting fails app creation before any request. */
export const discoverySettingsProvider: Provider = {
  provide: DISCOVERY_SETTINGS,
  useFactory: (options: DiscoveryModuleOptions) => createDiscoverySettings(options),
  inject: [DISCOVERY_MODULE_OPTIONS],
};

/** The module's instruments (no-op without `@opentelemetry/api` or an SDK). */
export const discoveryMetricsProvider: Provider = {
  provide: DiscoveryMetrics,
  useFactory: ({ service }: DiscoverySettings) =>
    DiscoveryMetrics.create({ name: service.name, serviceId: service.id }),
  inject: [DISCOVERY_SETTINGS],
};

/** No hooks of its own: `DiscoveryService` closes it last, after deregistering. */
export const consulClientProvider: Provider = {
  provide: CONSUL_CLIENT,
  useFactory: (settings: DiscoverySettings, metrics: DiscoveryMetrics) =>
    new ConsulClient(settings.consul, metrics),
  inject: [DISCOVERY_SETTINGS, DiscoveryMetrics],
};

export const discoveryProvider: Provider = {
  provide: DISCOVERY_PROVIDER,
  useExisting: ConsulDiscoveryProvider,
};
