import { illegalTransitionMessage } from './error-messages.js';

/** A state change the self-registration table does not allow: a bug in the module, never input. */
export class IllegalTransitionError extends Error {
  constructor(from: string, to: string) {
    super(illegalTransitionMessage(from, to));
    this.name = IllegalTransitionError.name;
  }
}
