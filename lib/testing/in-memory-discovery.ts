import { Injectable } from '@nestjs/common';
import { DiscoverySettingsError } from '../errors/discovery-settings.error.js';
import { unknownInstanceMessage } from '../errors/error-messages.js';
import { checkServiceId } from '../protocol/service-discovery.arguments.js';
import { readInstances, type InMemoryInstance } from './in-memory.arguments.js';
import { InMemoryCatalog } from './in-memory.catalog.js';

const SET_PASSING = 'InMemoryDiscovery.setPassing() arguments';

/**
 * Changes the double's membership from a test. Watches, `discover`, sharding and the HTTP client
 * see a change as they would see Consul's: watched names after their blocking query wakes (a few
 * microtasks later), so await what you observe, e.g. the next `watch()` emission.
 */
@Injectable()
export class InMemoryDiscovery {
  constructor(private readonly catalog: InMemoryCatalog) {}

  /**
   * The instances of `name` declared by the test become exactly these (validated first, as
   * `register()` validates); instances registered through the module (`register()`, self) stay.
   * Declared instances have no check of their own: passing until `setPassing(id, false)`.
   */
  setInstances(name: string, instances: InMemoryInstance[]): void {
    this.catalog.declare(
      name,
      readInstances(name, instances, 'instances', 'InMemoryDiscovery.setInstances() arguments'),
    );
  }

  /**
   * `false`: the instance fails its checks (out of `discover`, watches and sharding) until
   * `setPassing(id, true)`, whatever its own TTL passes say; `true` also passes its own check.
   */
  setPassing(serviceId: string, passing: boolean): void {
    const id = checkServiceId(serviceId, SET_PASSING);
    if (typeof passing !== 'boolean') {
      throw new DiscoverySettingsError(
        [{ path: 'passing', reasons: ['passing must be a boolean'] }],
        SET_PASSING,
      );
    }
    if (!this.catalog.setPassing(id, passing)) {
      throw new DiscoverySettingsError(
        [{ path: 'serviceId', reasons: [unknownInstanceMessage(id)] }],
        SET_PASSING,
      );
    }
  }
}
