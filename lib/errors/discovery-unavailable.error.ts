import { DiscoveryError } from './discovery.error.js';

/** Consul could not be reached (refused, reset, TLS failure, aborted, client closed). */
export class DiscoveryUnavailableError extends DiscoveryError {
  /** Node's error code when there is one (`ECONNREFUSED`, `ECONNRESET`, …). */
  readonly code?: string;

  constructor(message: string, code?: string) {
    super(message);
    this.code = code;
  }
}
