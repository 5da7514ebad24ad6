const WINDOW_MS = 10_000;
const BUCKETS = 10;
/**
 * `request()` runs on every call and a clock read costs more than the rest of it: the clock is
 * read once per this many requests (and before every retry). The requests since the last read
 * count in that read's bucket, so fewer than this many may leave the window early.
 */
const REQUESTS_PER_CLOCK_READ = 64;

/**
 * Retries allowed over a sliding 10 s window: `budgetPercent` of the requests in it, plus
 * `minPerSecond` per second, so a storm of failures cannot multiply the load.
 */
export class RetryBudget {
  private readonly requests = new Array<number>(BUCKETS).fill(0);
  private readonly retries = new Array<number>(BUCKETS).fill(0);
  private bucketStart = 0;
  private current = 0;
  private sinceClockRead = 0;

  constructor(
    private readonly budgetPercent: number,
    private readonly minPerSecond: number,
    private readonly now: () => number = Date.now,
  ) {
    this.bucketStart = now();
  }

  request(): void {
    if (++this.sinceClockRead >= REQUESTS_PER_CLOCK_READ) {
      this.sinceClockRead = 0;
      this.advance();
    }
    this.requests[this.current]++;
  }

  /** Takes one retry from the budget; `false` when it is spent. */
  tryRetry(): boolean {
    this.advance();
    const requests = this.requests.reduce((a, b) => a + b, 0);
    const retries = this.retries.reduce((a, b) => a + b, 0);
    const allowed = (requests * this.budgetPercent) / 100 + (this.minPerSecond * WINDOW_MS) / 1_000;
    if (retries >= allowed) return false;
    this.retries[this.current]++;
    return true;
  }

  private advance(): void {
    const bucketMs = WINDOW_MS / BUCKETS;
    const now = this.now();
    let steps = Math.floor((now - this.bucketStart) / bucketMs);
    if (steps <= 0) return;
    this.bucketStart += steps * bucketMs;
    steps = Math.min(steps, BUCKETS);
    for (let i = 0; i < steps; i++) {
      this.current = (this.current + 1) % BUCKETS;
      this.requests[this.current] = 0;
      this.retries[this.current] = 0;
    }
  }
}
