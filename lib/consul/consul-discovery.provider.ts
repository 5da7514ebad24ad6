import { Inject, Injectable, Logger } from '@nestjs/common';
import { CONSUL_CLIENT, DISCOVERY_SETTINGS } from '../discovery.constants.js';
import { ConsulResponseError } from '../errors/consul-response.error.js';
import { DiscoveryUnavailableError } from '../errors/discovery-unavailable.error.js';
import type {
  DiscoveryQuery,
  ServiceDiscoveryProtocol,
  ServiceInstance,
  ServiceRegistration,
} from '../protocol/service-discovery.protocol.js';
import { withRetry } from '../resilience/retry.js';
import { DiscoverySettings } from '../settings/discovery.settings.js';
import {
  checkDiscoverQuery,
  checkServiceId,
  readRegistration,
} from '../protocol/service-discovery.arguments.js';
import { WatchRegistry } from '../watch/watch.registry.js';
import { toAgentDefinition, type RegistrationFields } from './agent-definition.js';
import { ConsulClient } from './consul.client.js';

export interface WriteOptions {
  /** Defaults to `retry.maxAttempts`; `Infinity` retries until success or shutdown. */
  attempts?: number;
  /** Stops retrying (the client's own close always does). */
  signal?: AbortSignal;
  /** Retry refusals (4xx) too: a boot-time 403 may be fixed by an operator later. */
  retryRefusals?: boolean;
}

/** Transport failures, 5xx and 429 are worth another attempt; other 4xx are not. */
export function isRetryable(error: unknown): boolean {
  if (error instanceof ConsulResponseError) return error.status >= 500 || error.status === 429;
  return error instanceof DiscoveryUnavailableError;
}

/** `ServiceDiscoveryProtocol` on Consul (what `DISCOVERY_PROVIDER` resolves to). */
@Injectable()
export class ConsulDiscoveryProvider implements ServiceDiscoveryProtocol {
  private readonly logger = new Logger(ConsulDiscoveryProvider.name);

  constructor(
    @Inject(CONSUL_CLIENT) private readonly client: ConsulClient,
    @Inject(DISCOVERY_SETTINGS) private readonly settings: DiscoverySettings,
    private readonly watches: WatchRegistry,
  ) {}

  async register(registration: ServiceRegistration): Promise<boolean> {
    const args = readRegistration(registration);
    return this.succeeded(`register "${args.serviceId}"`, this.registerOrThrow(args, false));
  }

  async deregister(serviceId: string): Promise<boolean> {
    const id = checkServiceId(serviceId);
    return this.succeeded(`deregister "${id}"`, this.deregisterOrThrow(id));
  }

  /** Served from memory when name + query is watched; otherwise one read (plus a reset retry). */
  async discover(name: string, query?: DiscoveryQuery): Promise<ServiceInstance[]> {
    const checked = checkDiscoverQuery(name, query);
    const known = this.watches.find(name, checked)?.snapshot;
    if (known) return known.slice();
    return this.client.healthyInstances(name, checked);
  }

  /** Registers with retries; rejects with the last cause. */
  registerOrThrow(
    registration: RegistrationFields,
    initialPassing: boolean,
    options: WriteOptions = {},
  ): Promise<void> {
    const definition = toAgentDefinition(registration, initialPassing);
    return this.retrying(options, () => this.client.registerService(definition));
  }

  /** Deregisters with retries; an unknown service (404 on newer Consul) counts as gone. */
  deregisterOrThrow(serviceId: string, options: WriteOptions = {}): Promise<void> {
    return this.retrying(options, async () => {
      try {
        await this.client.deregisterService(serviceId);
      } catch (error) {
        if (!(error instanceof ConsulResponseError && error.status === 404)) throw error;
      }
    });
  }

  private retrying(options: WriteOptions, write: () => Promise<void>): Promise<void> {
    const { maxAttempts, initialDelayMs, maxDelayMs } = this.settings.retry;
    return withRetry(write, {
      maxAttempts: options.attempts ?? maxAttempts,
      initialDelayMs,
      maxDelayMs,
      signal: options.signal
        ? AbortSignal.any([options.signal, this.client.closeSignal])
        : this.client.closeSignal,
      isRetryable: options.retryRefusals ? () => true : isRetryable,
    });
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
