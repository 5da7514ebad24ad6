import { ConsulResponseError } from '../errors/consul-response.error.js';
import { DiscoveryTimeoutError } from '../errors/discovery-timeout.error.js';
import { DiscoveryUnavailableError } from '../errors/discovery-unavailable.error.js';

/** `discovery.consul.outcome` (and `error.type` of a failed heartbeat). */
export type ConsulOutcome =
  'success' | 'client_error' | 'server_error' | 'timeout' | 'aborted' | 'unavailable';

const ABORTED_CODES = new Set(['EABORTED', 'ECLOSED']);

/** How a Consul request ended, from the error `ConsulClient` mapped it to (none = success). */
export function consulOutcome(error?: unknown): ConsulOutcome {
  if (error === undefined) return 'success';
  if (error instanceof ConsulResponseError) {
    return error.status >= 500 ? 'server_error' : 'client_error';
  }
  if (error instanceof DiscoveryTimeoutError) return 'timeout';
  if (error instanceof DiscoveryUnavailableError && ABORTED_CODES.has(error.code ?? '')) {
    return 'aborted';
  }
  return 'unavailable';
}
