import { DiscoveryError } from './discovery.error.js';
import { consulResponseMessage } from './error-messages.js';

/** Consul answered with a non-2xx status; `consulMessage` is Consul's own text. */
export class ConsulResponseError extends DiscoveryError {
  readonly status: number;
  readonly consulMessage: string;
  readonly operation: string;

  constructor(operation: string, status: number, consulMessage: string) {
    super(consulResponseMessage(operation, status, consulMessage));
    this.status = status;
    this.consulMessage = consulMessage;
    this.operation = operation;
  }
}
