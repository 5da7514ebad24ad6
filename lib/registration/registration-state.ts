/**
 * Self-registration's states. `registering` and `deregistering` are writes in progress;
 * `stopped` is final (shutdown began: nothing registers the instance again).
 */
export const REGISTRATION_STATES = [
  'idle',
  'registering',
  'registered',
  'deregistering',
  'deregistered',
  'stopped',
] as const;

export type RegistrationState = (typeof REGISTRATION_STATES)[number];

/** The states a write ends in; a failed or superseded write falls back to the last of them. */
export type SettledState = Extract<RegistrationState, 'idle' | 'registered' | 'deregistered'>;

const TRANSITIONS: Readonly<Record<RegistrationState, readonly RegistrationState[]>> = {
  idle: ['registering', 'deregistering', 'stopped'],
  // A failed registration falls back to where it started (idle, deregistered, or registered
  // when it was a re-registration). Writes run one at a time, so no write starts from here —
  // except shutdown's deregistration, when the registration's answer did not come in time
  // (it may have landed on the agent).
  registering: ['registered', 'idle', 'deregistered', 'deregistering', 'stopped'],
  registered: ['registering', 'deregistering', 'stopped'],
  // A failed deregistration falls back too: the instance may still be registered.
  deregistering: ['deregistered', 'registered', 'idle', 'stopped'],
  deregistered: ['registering', 'deregistering', 'stopped'],
  stopped: [],
};

export function canTransition(from: RegistrationState, to: RegistrationState): boolean {
  return TRANSITIONS[from].includes(to);
}
