/**
 * A beat every `everyMs` on its own timer, one at a time: the next one is armed only after the
 * last has finished and only while `shouldBeat()` holds. The timer is unref'd: a heartbeat never
 * keeps a process alive.
 */
export class Heartbeat {
  private timer?: NodeJS.Timeout;
  private inFlight?: Promise<void>;

  constructor(
    private readonly everyMs: number,
    private readonly beat: () => Promise<void>,
    private readonly shouldBeat: () => boolean,
  ) {}

  /** Arms the next beat unless one is armed or running already. */
  start(): void {
    if (this.timer || this.inFlight) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.inFlight = this.beat().finally(() => {
        this.inFlight = undefined;
        if (this.shouldBeat()) this.start();
      });
    }, this.everyMs);
    this.timer.unref();
  }

  /** Disarms the next beat; a beat in flight finishes (see `idle()`) and does not re-arm. */
  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Settles when no beat is in flight. */
  idle(): Promise<void> {
    return this.inFlight ?? Promise.resolve();
  }
}
