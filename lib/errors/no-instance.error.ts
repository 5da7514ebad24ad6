import { DiscoveryError } from './discovery.error.js';
import { noInstanceMessage } from './error-messages.js';

/** `DiscoveryHttpClient`: the service has no passing instance (or none left to try). */
export class NoInstanceError extends DiscoveryError {
  readonly service: string;

  constructor(service: string) {
    super(noInstanceMessage(service));
    this.service = service;
  }
}
