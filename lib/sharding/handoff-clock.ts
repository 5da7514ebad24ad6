/**
 * Times a handoff as this instance sees it: it begins at the first membership change since
 * ownership last matched the table (a join, a leave, or the first set at boot) and ends once this
 * instance owns exactly what the table gives it. A partition gained meanwhile waited since the
 * beginning: settle window, `handoffDelayMs` or the lock (exclusive), whatever it took.
 */
export class HandoffClock {
  private since?: number;

  constructor(private readonly now: () => number = () => performance.now()) {}

  /** A membership change: a handoff begins, unless one is under way already (it began earlier). */
  begin(): void {
    this.since ??= this.now();
  }

  /** Seconds since the handoff under way began; `undefined` when none is. */
  elapsed(): number | undefined {
    return this.since === undefined ? undefined : (this.now() - this.since) / 1000;
  }

  /** Ends the handoff when `owned` is `target` (both ascending). */
  settle(owned: readonly number[], target: readonly number[]): void {
    if (owned.length === target.length && owned.every((p, i) => p === target[i])) {
      this.since = undefined;
    }
  }
}
