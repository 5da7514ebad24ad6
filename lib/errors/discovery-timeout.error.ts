import { DiscoveryUnavailableError } from './discovery-unavailable.error.js';
import { timeoutMessage } from './error-messages.js';

/** A Consul request (or a call through `DiscoveryHttpClient`) did not answer within its deadline. */
export class DiscoveryTimeoutError extends DiscoveryUnavailableError {
  readonly timeoutMs: number;

  constructor(
    operation: string,
    timeoutMs: number,
    message = timeoutMessage(operation, timeoutMs),
  ) {
    super(message, 'ETIMEDOUT');
    this.timeoutMs = timeoutMs;
  }
}
