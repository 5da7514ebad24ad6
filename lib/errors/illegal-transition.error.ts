import { illegalTransitionMessage } from './error-messages.js';

/**
 * A state change a state machine's table does not allow (self-registration, a partition's lock):
 * a bug in the module, never input. `to` is the target state or the event.
 */
export class IllegalTransitionError extends Error {
  constructor(from: string, to: string, machine = 'Self-registration') {
    super(illegalTransitionMessage(machine, from, to));
    this.name = IllegalTransitionError.name;
  }
}
