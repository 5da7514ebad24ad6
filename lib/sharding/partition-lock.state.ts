import { IllegalTransitionError } from '../errors/illegal-transition.error.js';

/**
 * One partition's lock in exclusive mode, as this instance sees it (docs/ARCHITECTURE.md draws
 * it). Only `running` counts as owned (with a fresh lease); a lock held in Consul is always in
 * `running`, `draining` or `releasing` here, or on its way to `releasing` (an answer undone), so
 * none is left held with nobody working it.
 */
export const PARTITION_LOCK_STATES = [
  'free',
  'acquiring',
  'running',
  'draining',
  'releasing',
] as const;

export type PartitionLockState = (typeof PARTITION_LOCK_STATES)[number];

export type PartitionLockEvent =
  /** The table gives it and the lease is fresh: a lock request is sent. */
  | 'acquire'
  /** The lock was granted and the state it was asked from still holds: handlers start. */
  | 'granted'
  /** Granted, but the state moved on meanwhile (lease, table, session, shutdown): released. */
  | 'undo'
  /** Not granted (held by another, lock-delay, invalid session, the request failed). */
  | 'refused'
  /** Lapse, the table moved it away, the lock was lost, deregistration or shutdown. */
  | 'stop'
  /** The run settled, or was abandoned at `drainTimeoutMs`. */
  | 'drained'
  /** Consul answered the release (or the session that held it is gone). */
  | 'released'
  /** Consul shows this session on a key nobody here works: released. */
  | 'stray';

const TRANSITIONS: Readonly<
  Record<PartitionLockState, Readonly<Partial<Record<PartitionLockEvent, PartitionLockState>>>>
> = {
  free: { acquire: 'acquiring', stray: 'releasing' },
  acquiring: { granted: 'running', undo: 'releasing', refused: 'free' },
  running: { stop: 'draining' },
  // A lock is given back only after its run drained: the next run starts after the old settled.
  draining: { drained: 'releasing' },
  releasing: { released: 'free' },
};

/** The state `event` leads to from `from`; a pair the table does not list is a bug. */
export function nextPartitionLockState(
  from: PartitionLockState,
  event: PartitionLockEvent,
): PartitionLockState {
  const to = TRANSITIONS[from][event];
  if (to === undefined) throw new IllegalTransitionError(from, event, 'A partition lock');
  return to;
}

/** What an acquisition was sent from: the lease's epoch and the session. */
export interface LockRequest {
  epoch: number;
  session: string;
}

/** Where things stand when a grant comes back. */
export interface GrantContext extends LockRequest {
  /** The table still gives the partition to this instance, and no shutdown began. */
  wanted: boolean;
  leaseFresh: boolean;
  /** The greatest token a run of the partition got here so far (0: none). */
  lastToken: number;
  /** A later answer on the prefix already showed the key not held by the session. */
  lostSince: boolean;
}

/**
 * A grant applies only to the state it was asked from: same lease epoch (no lapse,
 * deregistration or lost agent since), same session, still wanted, lease fresh — and with a
 * token greater than every earlier run's (the same session re-acquiring a lock it kept would get
 * the old `LockIndex`), and not lost already by what the prefix showed since. Anything else is undone: the lock is released, and asked again if wanted.
 */
export function grantEvent(
  sent: LockRequest,
  now: GrantContext,
  lockIndex: number,
): 'granted' | 'undo' {
  const applies =
    sent.epoch === now.epoch &&
    sent.session === now.session &&
    now.wanted &&
    now.leaseFresh &&
    !now.lostSince &&
    lockIndex > now.lastToken;
  return applies ? 'granted' : 'undo';
}
