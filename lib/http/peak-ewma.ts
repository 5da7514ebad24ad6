/** How fast an observation fades: Finagle's and Linkerd's default decay. */
export const EWMA_DECAY_MS = 10_000;

interface Ewma {
  cost: number;
  stamp: number;
}

/**
 * Peak-EWMA of response-header latency per instance key (Finagle's `PeakEwma`): a slower
 * observation replaces the cost at once (the peak), a faster one is averaged in with a weight
 * that grows with the time since the last one; reading decays the cost toward 0, so an instance
 * not picked for a while is tried again. A key seen for the first time starts at the median of
 * the costs of the keys it is compared with.
 */
export class PeakEwma {
  private readonly costs = new Map<string, Ewma>();

  constructor(private readonly now: () => number = () => performance.now()) {}

  observe(key: string, latencyMs: number): void {
    const ewma = this.costs.get(key);
    if (ewma) this.update(ewma, latencyMs);
    else this.costs.set(key, { cost: latencyMs, stamp: this.now() });
  }

  /** The cost of `key` now; a new key gets the median of `peers`' costs. */
  cost(key: string, peers: readonly string[]): number {
    let ewma = this.costs.get(key);
    if (!ewma) {
      ewma = { cost: this.median(peers, key), stamp: this.now() };
      this.costs.set(key, ewma);
    }
    this.update(ewma, 0);
    return ewma.cost;
  }

  /** Forget keys not in `keys`. */
  retain(keys: ReadonlySet<string>): void {
    for (const key of this.costs.keys()) if (!keys.has(key)) this.costs.delete(key);
  }

  private update(ewma: Ewma, latencyMs: number): void {
    const now = this.now();
    const weight = Math.exp(-Math.max(now - ewma.stamp, 0) / EWMA_DECAY_MS);
    ewma.cost = latencyMs > ewma.cost ? latencyMs : ewma.cost * weight + latencyMs * (1 - weight);
    ewma.stamp = now;
  }

  private median(peers: readonly string[], except: string): number {
    const known = peers
      .filter((p) => p !== except)
      .map((p) => this.costs.get(p)?.cost)
      .filter((c): c is number => c !== undefined)
      .sort((a, b) => a - b);
    if (known.length === 0) return 0;
    const mid = known.length >> 1;
    return known.length % 2 === 1 ? known[mid] : (known[mid - 1] + known[mid]) / 2;
  }
}
