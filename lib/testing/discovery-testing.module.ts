import { type DynamicModule, Module } from '@nestjs/common';
import { CONSUL_CLIENT, DISCOVERY_SETTINGS } from '../discovery.constants.js';
import { discoveryCoreExports, discoveryCoreProviders } from '../discovery.providers.js';
import { DiscoverySettingsError } from '../errors/discovery-settings.error.js';
import { isPlainObject, ViolationCollector } from '../protocol/input.reader.js';
import type { DiscoveryModuleOptions } from '../settings/discovery-module-options.interface.js';
import { createDiscoverySettings } from '../settings/discovery-settings.factory.js';
import type { DiscoverySettings } from '../settings/discovery.settings.js';
import {
  readInstances,
  readLocalDatacenter,
  type InMemoryInstance,
} from './in-memory.arguments.js';
import { InMemoryCatalog } from './in-memory.catalog.js';
import { InMemoryDiscovery } from './in-memory-discovery.js';
import { IN_MEMORY_ADDRESS, InMemoryTransport } from './in-memory.transport.js';

export interface DiscoveryTestingModuleOptions {
  /** Instances by service name, passing from the start. */
  services?: Record<string, InMemoryInstance[]>;
  /** This instance: registered at bootstrap (address `127.0.0.1`), heartbeated, deregistered at shutdown. */
  self?: { name: string; port: number; serviceId?: string };
  /** As `DiscoveryModule`'s `sharding` (both modes). */
  sharding?: DiscoveryModuleOptions['sharding'];
  /**
   * The double's own datacenter (default `'dc1'`, as a dev agent's): it holds the instances that
   * declare none, so a query naming it finds them; a datacenter no instance declares rejects as
   * Consul does (`ConsulResponseError`, "No path to datacenter").
   */
  datacenter?: string;
  isGlobal?: boolean;
}

const TESTING_OPTIONS = Symbol('DISCOVERY_TESTING_OPTIONS');
const SUBJECT = 'DiscoveryTestingModule options';
const KNOWN_KEYS = new Set(['services', 'self', 'sharding', 'datacenter', 'isGlobal']);

/**
 * `self` and `sharding` through the real settings factory (errors name `service.*` and
 * `sharding.*`, as `DiscoveryModule`'s do); Consul's environment variables are not read.
 */
function testingSettings(options: DiscoveryTestingModuleOptions): DiscoverySettings {
  const out = new ViolationCollector();
  if (!isPlainObject(options)) out.add('options', 'options must be an object');
  for (const key of Object.keys(options ?? {})) {
    if (!KNOWN_KEYS.has(key)) out.add(key, `${key} is not a known setting`);
  }
  if (!out.empty) throw new DiscoverySettingsError(out.violations, SUBJECT);
  const { self, sharding } = options;
  const moduleOptions: DiscoveryModuleOptions = { autoRegister: self !== undefined, sharding };
  if (self !== undefined) {
    const { serviceId, ...service } = isPlainObject(self) ? self : ({} as typeof self);
    moduleOptions.service = { ...service, id: serviceId, address: IN_MEMORY_ADDRESS };
  }
  return createDiscoverySettings(moduleOptions, {});
}

function seededCatalog(options: DiscoveryTestingModuleOptions): InMemoryCatalog {
  const catalog = new InMemoryCatalog(readLocalDatacenter(options.datacenter, SUBJECT));
  const services: unknown = options.services ?? {};
  if (!isPlainObject(services)) {
    throw new DiscoverySettingsError(
      [{ path: 'services', reasons: ['services must be an object of instance lists by name'] }],
      SUBJECT,
    );
  }
  for (const [name, instances] of Object.entries(services)) {
    catalog.declare(name, readInstances(name, instances, `services.${name}`, SUBJECT));
  }
  return catalog;
}

/**
 * The module's in-memory double: the same classes as `DiscoveryModule` (watches, the
 * self-registration state machine, sharding, the HTTP client) on an in-memory transport instead
 * of Consul. Provides and exports everything `DiscoveryModule` does except `CONSUL_CLIENT`, plus
 * `InMemoryDiscovery` to change the membership from a test.
 */
@Module({})
export class DiscoveryTestingModule {
  static forRoot(options: DiscoveryTestingModuleOptions = {}): DynamicModule {
    return {
      module: DiscoveryTestingModule,
      global: isPlainObject(options) && options.isGlobal === true,
      providers: [
        { provide: TESTING_OPTIONS, useValue: options },
        { provide: DISCOVERY_SETTINGS, useFactory: testingSettings, inject: [TESTING_OPTIONS] },
        { provide: InMemoryCatalog, useFactory: seededCatalog, inject: [TESTING_OPTIONS] },
        // Under the token the classes inject, but not exported: tests see no Consul client.
        {
          provide: CONSUL_CLIENT,
          useFactory: (catalog: InMemoryCatalog) => new InMemoryTransport(catalog),
          inject: [InMemoryCatalog],
        },
        InMemoryDiscovery,
        ...discoveryCoreProviders,
      ],
      exports: [...discoveryCoreExports, InMemoryDiscovery],
    };
  }
}
