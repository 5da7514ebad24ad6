import type { HealthCheckSettings } from '../protocol/health-check.rules.js';
import type { HealthCheck } from '../protocol/service-discovery.protocol.js';
import type { DiscoverySettings } from './discovery.settings.js';

/** Fields the factory sets once the settings are valid; they are not options. */
type DerivedField = 'waitMs' | 'lockDelayMs';

/** One settings class as options: every field optional, nested sections too. */
type OptionsOf<T> = {
  [K in keyof T as K extends DerivedField ? never : K]?: OptionOf<T[K]>;
};

/** Tags, meta and other arrays or maps are given whole; a check is the public `HealthCheck`. */
type OptionOf<V> = V extends HealthCheckSettings
  ? HealthCheck
  : V extends readonly unknown[]
    ? V
    : V extends object
      ? string extends keyof V
        ? V
        : OptionsOf<V>
      : V;

/**
 * What `forRoot` / `forRootAsync` take: the fields of `DiscoverySettings`, every one optional and
 * merged over the defaults (`healthCheck` replaces the default check as a whole).
 */
export type DiscoveryModuleOptions = OptionsOf<DiscoverySettings>;

export interface DiscoveryOptionsFactory {
  createDiscoveryOptions(): DiscoveryModuleOptions | Promise<DiscoveryModuleOptions>;
}
