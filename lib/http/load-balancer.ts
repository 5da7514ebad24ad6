import type { HttpStrategy } from '../settings/discovery.settings.js';
import { instanceKey, type InstanceRef } from './instance-key.js';

const NOTHING = (): void => undefined;

/**
 * Picks one of `candidates` (a service's eligible instances, in a stable order). Round-robin keeps
 * one cursor per service; least-request is the power of two choices on requests in flight.
 */
export class LoadBalancer {
  private readonly cursors = new Map<string, number>();
  private readonly inflight = new Map<string, number>();

  constructor(
    private readonly strategy: HttpStrategy,
    private readonly random: () => number = Math.random,
  ) {}

  pick<T extends InstanceRef>(service: string, candidates: readonly T[]): T | undefined {
    const n = candidates.length;
    if (n <= 1) return candidates[0];
    switch (this.strategy) {
      case 'random':
        return candidates[Math.floor(this.random() * n)];
      case 'least-request': {
        const a = candidates[Math.floor(this.random() * n)];
        let b = candidates[Math.floor(this.random() * (n - 1))];
        if (b === a) b = candidates[n - 1];
        return this.load(b) < this.load(a) ? b : a;
      }
      default: {
        const cursor = this.cursors.get(service) ?? 0;
        this.cursors.set(service, (cursor + 1) % Number.MAX_SAFE_INTEGER);
        return candidates[cursor % n];
      }
    }
  }

  /** A request to `instance` started; call the returned function when it ends. */
  started(instance: InstanceRef): () => void {
    // Only least-request reads the counts.
    if (this.strategy !== 'least-request') return NOTHING;
    const key = instanceKey(instance);
    this.inflight.set(key, (this.inflight.get(key) ?? 0) + 1);
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      const left = (this.inflight.get(key) ?? 0) - 1;
      if (left > 0) this.inflight.set(key, left);
      else this.inflight.delete(key);
    };
  }

  load(instance: InstanceRef): number {
    return this.inflight.get(instanceKey(instance)) ?? 0;
  }
}
