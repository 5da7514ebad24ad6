import { Inject, Injectable, Logger } from '@nestjs/common';
import type { ConsulTransport } from '../consul/consul.transport.js';
import { CONSUL_CLIENT } from '../discovery.constants.js';
import type {
  DiscoveryQuery,
  ServiceDiscoveryProtocol,
  ServiceInstance,
  ServiceRegistration,
} from '../protocol/service-discovery.protocol.js';
import {
  checkDiscoverQuery,
  checkServiceId,
  readRegistration,
} from '../protocol/service-discovery.arguments.js';
import { WatchRegistry } from '../watch/watch.registry.js';
import { ConsulRegistrar } from './consul.registrar.js';

/** `ServiceDiscoveryProtocol` on Consul (what `DISCOVERY_PROVIDER` resolves to). */
@Injectable()
export class ConsulDiscoveryProvider implements ServiceDiscoveryProtocol {
  private readonly logger = new Logger(ConsulDiscoveryProvider.name);

  constructor(
    @Inject(CONSUL_CLIENT) private readonly client: ConsulTransport,
    private readonly registrar: ConsulRegistrar,
    private readonly watches: WatchRegistry,
  ) {}

  async register(registration: ServiceRegistration): Promise<boolean> {
    const args = readRegistration(registration);
    return this.succeeded(`register "${args.serviceId}"`, this.registrar.register(args, false));
  }

  async deregister(serviceId: string): Promise<boolean> {
    const id = checkServiceId(serviceId);
    return this.succeeded(`deregister "${id}"`, this.registrar.deregister(id));
  }

  /** Served from memory when name + query is watched; otherwise one read (plus a reset retry). */
  async discover(name: string, query?: DiscoveryQuery): Promise<ServiceInstance[]> {
    const checked = checkDiscoverQuery(name, query);
    const known = this.watches.find(name, checked)?.snapshot;
    if (known) return known.slice();
    return this.client.healthyInstances(name, checked);
  }

  private async succeeded(what: string, write: Promise<void>): Promise<boolean> {
    try {
      await write;
      return true;
    } catch (error) {
      this.logger.warn(`Could not ${what}: ${(error as Error).message}`);
      return false;
    }
  }
}
