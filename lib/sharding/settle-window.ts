/**
 * Debounces bursts: `fire` runs `settleMs` after the last `touch()`, but no later than
 * `4 × settleMs` after the first touch of a burst, so constant churn still recomputes. Timers are
 * unref'd.
 */
export class SettleWindow {
  private timer?: NodeJS.Timeout;
  private burstStartedAt?: number;

  constructor(
    private readonly settleMs: number,
    private readonly fire: () => void,
    private readonly now: () => number = () => performance.now(),
  ) {}

  touch(): void {
    const now = this.now();
    this.burstStartedAt ??= now;
    const due = Math.min(now + this.settleMs, this.burstStartedAt + 4 * this.settleMs);
    clearTimeout(this.timer);
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.burstStartedAt = undefined;
        this.fire();
      },
      Math.max(0, due - now),
    );
    this.timer.unref();
  }

  cancel(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.burstStartedAt = undefined;
  }
}
