import { Inject, Injectable } from '@nestjs/common';
import {
  serviceCheckId,
  toAgentDefinition,
  type RegistrationFields,
} from '../consul/agent-definition.js';
import type { ConsulTransport } from '../consul/consul.transport.js';
import { CONSUL_CLIENT, DISCOVERY_SETTINGS } from '../discovery.constants.js';
import { ConsulResponseError } from '../errors/consul-response.error.js';
import { DiscoveryUnavailableError } from '../errors/discovery-unavailable.error.js';
import { withRetry } from '../resilience/retry.js';
import { DiscoverySettings } from '../settings/discovery.settings.js';

export interface WriteOptions {
  /** Defaults to `retry.maxAttempts`; `Infinity` retries until success or shutdown. */
  attempts?: number;
  /** Stops retrying between attempts (an attempt in flight completes; the client's close always stops). */
  signal?: AbortSignal;
  /** Retry refusals (4xx) too: a boot-time 403 may be fixed by an operator later. */
  retryRefusals?: boolean;
}

/** Transport failures, 5xx and 429 are worth another attempt; other 4xx are not. */
export function isRetryable(error: unknown): boolean {
  if (error instanceof ConsulResponseError) return error.status >= 500 || error.status === 429;
  return error instanceof DiscoveryUnavailableError;
}

/** 1.8 answers a pass for an unknown check with 500 "does not have associated TTL"; newer, 404. */
export function isUnknownCheck(error: unknown): boolean {
  return (
    error instanceof ConsulResponseError &&
    (error.status === 404 ||
      (error.status === 500 &&
        /does not have associated TTL|unknown check/i.test(error.consulMessage)))
  );
}

/**
 * Deregistering an unknown service: 1.8 answers 200, 1.8 with ACLs 500 `Unknown service`, newer
 * Consul 404. All mean the service is gone.
 */
export function isUnknownService(error: unknown): boolean {
  return (
    error instanceof ConsulResponseError &&
    (error.status === 404 || (error.status === 500 && /unknown service/i.test(error.consulMessage)))
  );
}

/**
 * Every write registration makes to the agent (register, deregister, the heartbeat's look at its
 * own registration), with the retry policy of the settings: the one seam between registration
 * and the transport.
 */
@Injectable()
export class ConsulRegistrar {
  constructor(
    @Inject(CONSUL_CLIENT) private readonly client: ConsulTransport,
    @Inject(DISCOVERY_SETTINGS) private readonly settings: DiscoverySettings,
  ) {}

  /** `http(s)://host:port` of the agent, for messages. */
  get target(): string {
    return this.client.target;
  }

  /** Registers with retries (`initialPassing` starts a TTL check passing); rejects with the last cause. */
  register(
    registration: RegistrationFields,
    initialPassing: boolean,
    options: WriteOptions = {},
  ): Promise<void> {
    const definition = toAgentDefinition(registration, initialPassing);
    return this.retrying(options, () => this.client.registerService(definition));
  }

  /** Deregisters with retries; an unknown service counts as gone. */
  deregister(serviceId: string, options: WriteOptions = {}): Promise<void> {
    return this.retrying(options, async () => {
      try {
        await this.client.deregisterService(serviceId);
      } catch (error) {
        if (!isUnknownService(error)) throw error;
      }
    });
  }

  /**
   * One heartbeat, no retry (the next beat is the retry): a TTL check is passed; otherwise the
   * agent's local services are looked at. `false` = the agent no longer holds the registration
   * (restarted, or deregistered behind our back); other failures reject.
   */
  async heartbeat(registration: RegistrationFields): Promise<boolean> {
    if (registration.healthCheck && 'ttl' in registration.healthCheck) {
      try {
        await this.client.passCheck(serviceCheckId(registration.serviceId));
        return true;
      } catch (error) {
        if (isUnknownCheck(error)) return false;
        throw error;
      }
    }
    return this.client.hasLocalService(registration.serviceId);
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
}
