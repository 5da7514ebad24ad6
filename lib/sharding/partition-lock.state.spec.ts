import { describe, expect, it } from '@jest/globals';
import { IllegalTransitionError } from '../errors/illegal-transition.error.js';
import {
  grantEvent,
  nextPartitionLockState,
  PARTITION_LOCK_STATES,
  type PartitionLockEvent,
  type PartitionLockState,
} from './partition-lock.state.js';

const EVENTS: readonly PartitionLockEvent[] = [
  'acquire',
  'granted',
  'undo',
  'refused',
  'stop',
  'drained',
  'released',
  'stray',
];

describe('partition lock states', () => {
  it('allows exactly the transitions of the table', () => {
    const allowed = PARTITION_LOCK_STATES.flatMap((from) =>
      EVENTS.flatMap((event) => {
        try {
          return [`${from} -${event}-> ${nextPartitionLockState(from, event)}`];
        } catch (error) {
          expect(error).toBeInstanceOf(IllegalTransitionError);
          return [];
        }
      }),
    );
    expect(allowed).toEqual([
      'free -acquire-> acquiring',
      'free -stray-> releasing',
      'acquiring -granted-> running',
      'acquiring -undo-> releasing',
      'acquiring -refused-> free',
      'running -stop-> draining',
      'draining -drained-> releasing',
      'releasing -released-> free',
    ]);
  });

  it('a held lock always leads back to free through releasing (never dropped)', () => {
    // From every state that may hold a lock in Consul, following the table ends in free only
    // through releasing.
    const holding: PartitionLockState[] = ['acquiring', 'running', 'draining', 'releasing'];
    for (const from of holding) {
      const path: PartitionLockState[] = [from];
      let state = from;
      for (const event of ['undo', 'stop', 'drained', 'released'] as const) {
        try {
          state = nextPartitionLockState(state, event);
          path.push(state);
        } catch {
          // not from this state
        }
      }
      expect(path.at(-2)).toBe('releasing');
      expect(path.at(-1)).toBe('free');
    }
  });

  it('names the machine in the error', () => {
    expect(() => nextPartitionLockState('running', 'granted')).toThrow(
      'A partition lock cannot go from "running" to "granted"',
    );
  });
});

describe('grantEvent', () => {
  const sent = { epoch: 3, session: 's1' };
  const now = {
    epoch: 3,
    session: 's1',
    wanted: true,
    leaseFresh: true,
    lastToken: 4,
    lostSince: false,
  };

  it('applies a grant to the state it was asked from', () => {
    expect(grantEvent(sent, now, 5)).toBe('granted');
  });

  it.each([
    ['the lease lapsed since (a new epoch)', { epoch: 4 }, 5],
    ['the session changed', { session: 's2' }, 5],
    ['the table moved the partition away, or shutdown began', { wanted: false }, 5],
    ['the lease is not fresh', { leaseFresh: false }, 5],
    ['a later prefix answer showed the key not held by the session', { lostSince: true }, 5],
    ['the token is not newer than the last run’s (a lock kept, re-acquired)', {}, 4],
  ])('undoes it when %s', (_why, change, lockIndex) => {
    expect(grantEvent(sent, { ...now, ...change }, lockIndex)).toBe('undo');
  });
});
