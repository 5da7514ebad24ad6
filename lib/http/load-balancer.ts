import type { HttpStrategy } from '../settings/discovery.settings.js';
import { instanceKey, type InstanceRef } from './instance-key.js';
import { PeakEwma } from './peak-ewma.js';

/** What the balancer hears of one attempt. */
export interface AttemptLoad {
  /** Response headers (or the upgrade) arrived. */
  responded(): void;
  /** The attempt is over (answered, failed or abandoned); idempotent. */
  ended(): void;
}

const UNTRACKED: AttemptLoad = { responded: () => undefined, ended: () => undefined };

/**
 * Picks one of `candidates` (a service's eligible instances, in a stable order). Round-robin keeps
 * one cursor per service; least-request is the power of two choices on requests in flight;
 * p2c-ewma the power of two choices on peak-EWMA header latency × (in flight + 1).
 */
export class LoadBalancer {
  private readonly cursors = new Map<string, number>();
  private readonly inflight = new Map<string, number>();
  private readonly latency: PeakEwma;

  constructor(
    private readonly strategy: HttpStrategy,
    private readonly random: () => number = Math.random,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.latency = new PeakEwma(now);
  }

  pick<T extends InstanceRef>(service: string, candidates: readonly T[]): T | undefined {
    const n = candidates.length;
    if (n <= 1) return candidates[0];
    switch (this.strategy) {
      case 'random':
        return candidates[Math.floor(this.random() * n)];
      case 'least-request': {
        const [a, b] = this.twoOf(candidates);
        return this.load(b) < this.load(a) ? b : a;
      }
      case 'p2c-ewma': {
        const [a, b] = this.twoOf(candidates);
        return this.ewmaLoad(b, candidates) < this.ewmaLoad(a, candidates) ? b : a;
      }
      default: {
        const cursor = this.cursors.get(service) ?? 0;
        this.cursors.set(service, (cursor + 1) % Number.MAX_SAFE_INTEGER);
        return candidates[cursor % n];
      }
    }
  }

  /** A request to `instance` started. */
  started(instance: InstanceRef): AttemptLoad {
    // Round-robin and random read nothing.
    if (this.strategy !== 'least-request' && this.strategy !== 'p2c-ewma') return UNTRACKED;
    const key = instanceKey(instance);
    this.inflight.set(key, (this.inflight.get(key) ?? 0) + 1);
    const startedAt = this.now();
    let ended = false;
    let responded = false;
    return {
      responded: () => {
        if (responded || ended) return;
        responded = true;
        this.latency.observe(key, this.now() - startedAt);
      },
      ended: () => {
        if (ended) return;
        ended = true;
        // A failure before headers costs what it took (a hung instance's attempt timeout).
        if (!responded) this.latency.observe(key, this.now() - startedAt);
        const left = (this.inflight.get(key) ?? 0) - 1;
        if (left > 0) this.inflight.set(key, left);
        else this.inflight.delete(key);
      },
    };
  }

  load(instance: InstanceRef): number {
    return this.inflight.get(instanceKey(instance)) ?? 0;
  }

  /** Forget the latency of instances that left every passing set (keys: instance-key.ts). */
  retain(keys: ReadonlySet<string>): void {
    this.latency.retain(keys);
  }

  private ewmaLoad(instance: InstanceRef, candidates: readonly InstanceRef[]): number {
    const key = instanceKey(instance);
    const cost = this.latency.cost(key, candidates.map(instanceKey));
    return cost * ((this.inflight.get(key) ?? 0) + 1);
  }

  /** Two distinct candidates at random. */
  private twoOf<T>(candidates: readonly T[]): [T, T] {
    const n = candidates.length;
    const a = candidates[Math.floor(this.random() * n)];
    let b = candidates[Math.floor(this.random() * (n - 1))];
    if (b === a) b = candidates[n - 1];
    return [a, b];
  }
}
