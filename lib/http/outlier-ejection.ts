import { instanceEndpoint, instanceKey, type InstanceRef } from './instance-key.js';

export interface OutlierPolicy {
  consecutiveFailures: number;
  baseEjectionMs: number;
  maxEjectionMs: number;
  maxEjectionPercent: number;
}

interface Record {
  /** The life the failures are of (instance-key.ts `instanceEndpoint`). */
  endpoint: string;
  failures: number;
  /** The multiplier of the next ejection's length, less one; decays while not ejected. */
  timesEjected: number;
  ejectedUntil: number;
}

/**
 * Passive ejection, local only: after `consecutiveFailures` failures in a row an instance is
 * skipped for `baseEjectionMs × times ejected` (at most `maxEjectionMs`); at most
 * max(1, floor(n × maxEjectionPercent / 100)) instances of a service are ejected at once, and
 * when fewer than half of the passing instances would be eligible, all of them are used. The
 * multiplier falls by one for every `baseEjectionMs` spent un-ejected (Envoy's rule). Instances
 * are keyed by node + serviceId (instance-key.ts); a record belongs to one life of the instance
 * (its address and port), so a process restarted on a new port starts afresh even when the watch
 * never showed it gone.
 */
export class OutlierEjection {
  private readonly records = new Map<string, Record>();
  /** When the last ejection in force ends: before it, some instance may be ejected. */
  private ejectionsUntil = 0;

  constructor(
    private readonly policy: OutlierPolicy,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** The instances to pick from: the passing ones minus those ejected now. */
  eligible<T extends InstanceRef>(passing: readonly T[]): readonly T[] {
    if (this.ejectionsUntil === 0) return passing;
    const now = this.now();
    if (now >= this.ejectionsUntil) {
      this.ejectionsUntil = 0;
      return passing;
    }
    const eligible = passing.filter((i) => !this.isEjected(i, now));
    return eligible.length * 2 < passing.length ? passing : eligible;
  }

  succeeded(instance: InstanceRef): void {
    // The common case, every request: no instance has failed, no key to build.
    if (this.records.size === 0) return;
    const record = this.records.get(instanceKey(instance));
    // Only a count to reset costs the endpoint's string.
    if (record && record.failures > 0 && record.endpoint === instanceEndpoint(instance)) {
      record.failures = 0;
    }
  }

  /**
   * A failure of `instance`, one of `passing` (the service's instances now); `true` when it
   * ejected the instance.
   */
  failed(instance: InstanceRef, passing: readonly InstanceRef[]): boolean {
    const key = instanceKey(instance);
    const endpoint = instanceEndpoint(instance);
    // Gone from the set already, or back there as a new life (a request that was in flight when
    // it left): a returning instance with the same identity must not inherit the failures of its
    // previous life.
    if (!passing.some((i) => instanceKey(i) === key && instanceEndpoint(i) === endpoint)) {
      return false;
    }
    let record = this.records.get(key);
    if (!record || record.endpoint !== endpoint) {
      record = { endpoint, failures: 0, timesEjected: 0, ejectedUntil: 0 };
      this.records.set(key, record);
    }
    record.failures++;
    const now = this.now();
    if (record.failures < this.policy.consecutiveFailures || record.ejectedUntil > now) {
      return false;
    }
    const cap = Math.max(1, Math.floor((passing.length * this.policy.maxEjectionPercent) / 100));
    const ejectedNow = passing.filter((i) => this.isEjected(i, now)).length;
    if (ejectedNow >= cap) return false;
    if (record.timesEjected > 0) {
      const unejectedMs = now - record.ejectedUntil;
      const decay = Math.floor(unejectedMs / this.policy.baseEjectionMs);
      record.timesEjected = Math.max(0, record.timesEjected - decay);
    }
    record.timesEjected++;
    record.failures = 0;
    record.ejectedUntil =
      now + Math.min(this.policy.maxEjectionMs, this.policy.baseEjectionMs * record.timesEjected);
    this.ejectionsUntil = Math.max(this.ejectionsUntil, record.ejectedUntil);
    return true;
  }

  isEjected(instance: InstanceRef, now = this.now()): boolean {
    const record = this.records.get(instanceKey(instance));
    return (
      record !== undefined &&
      record.ejectedUntil > now &&
      record.endpoint === instanceEndpoint(instance)
    );
  }

  /** Forget instances that left the passing set (keys: instance-key.ts). */
  retain(keys: ReadonlySet<string>): void {
    for (const key of this.records.keys()) if (!keys.has(key)) this.records.delete(key);
  }
}
