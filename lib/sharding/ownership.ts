/** Tells the service what changed in `owned()`. */
export type OwnershipChanged = (acquired: number[], released: number[]) => void;

/** How an instance comes to own the partitions the table gives it, and lets go of the others. */
export interface Ownership {
  /** Bootstrap (exclusive: follow the lock prefix and the lease). */
  start(): void;
  /** The table's partitions for this instance (ascending); `[]` when it is not a member. */
  assign(target: readonly number[]): void;
  owns(partition: number): boolean;
  /** Ascending. */
  owned(): number[];
  token(partition: number): number | undefined;
  /** Releases everything by `deadline` (a `Date.now()` value). */
  stop(deadline: number): Promise<void>;
}

export const ascending = (partitions: Iterable<number>): number[] =>
  [...partitions].sort((a, b) => a - b);

/**
 * The most the handlers' drain may take at shutdown: half of what remains before `deadline`
 * (a `Date.now()` value), within `drainTimeoutMs`; the rest is kept for releasing, destroying
 * the session and deregistering.
 */
export const shutdownDrainMs = (drainTimeoutMs: number, deadline: number): number =>
  Math.max(0, Math.min(drainTimeoutMs, (deadline - Date.now()) / 2));
