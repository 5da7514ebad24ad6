import { abortableDelay } from './abortable-delay.js';

/** Token bucket: `burst` wake-ups at once, refilled at `perSecond`. */
export class TokenBucket {
  private tokens: number;
  private last = performance.now();

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
  ) {
    this.tokens = burst;
  }

  /** Waits for a token; resolves `false` if `signal` aborted first. */
  async take(signal?: AbortSignal): Promise<boolean> {
    this.refill();
    if (this.tokens < 1) {
      const waitMs = Math.ceil(((1 - this.tokens) / this.perSecond) * 1000);
      if (!(await abortableDelay(waitMs, signal))) return false;
      this.refill();
    }
    this.tokens = Math.max(0, this.tokens - 1);
    return true;
  }

  private refill(): void {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.perSecond);
    this.last = now;
  }
}
