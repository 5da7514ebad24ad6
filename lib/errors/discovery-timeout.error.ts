import { DiscoveryUnavailableError } from './discovery-unavailable.error.js';
import { timeoutMessage } from './error-messages.js';

/** A Consul request did not answer within its deadline. */
export class DiscoveryTimeoutError extends DiscoveryUnavailableError {
  readonly timeoutMs: number;

  constructor(operation: string, timeoutMs: number) {
    super(timeoutMessage(operation, timeoutMs), 'ETIMEDOUT');
    this.timeoutMs = timeoutMs;
  }
}
