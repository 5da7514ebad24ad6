export interface OutlierPolicy {
  consecutiveFailures: number;
  baseEjectionMs: number;
  maxEjectionMs: number;
  maxEjectionPercent: number;
}

interface Record {
  failures: number;
  timesEjected: number;
  ejectedUntil: number;
}

/**
 * Passive ejection, local only: after `consecutiveFailures` failures in a row an instance is
 * skipped for `baseEjectionMs × times ejected` (at most `maxEjectionMs`); at most
 * max(1, floor(n × maxEjectionPercent / 100)) instances of a service are ejected at once, and
 * when fewer than half of the passing instances would be eligible, all of them are used.
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
  eligible<T extends { serviceId: string }>(passing: readonly T[]): readonly T[] {
    if (this.ejectionsUntil === 0) return passing;
    const now = this.now();
    if (now >= this.ejectionsUntil) {
      this.ejectionsUntil = 0;
      return passing;
    }
    const eligible = passing.filter((i) => !this.isEjected(i.serviceId, now));
    return eligible.length * 2 < passing.length ? passing : eligible;
  }

  succeeded(serviceId: string): void {
    const record = this.records.get(serviceId);
    if (record) record.failures = 0;
  }

  /**
   * A failure of `serviceId`, one of `passing` (the service's instances now); `true` when it
   * ejected the instance.
   */
  failed(serviceId: string, passing: readonly { serviceId: string }[]): boolean {
    const record = this.records.get(serviceId) ?? { failures: 0, timesEjected: 0, ejectedUntil: 0 };
    this.records.set(serviceId, record);
    record.failures++;
    const now = this.now();
    if (record.failures < this.policy.consecutiveFailures || this.isEjected(serviceId, now)) {
      return false;
    }
    const cap = Math.max(1, Math.floor((passing.length * this.policy.maxEjectionPercent) / 100));
    const ejectedNow = passing.filter((i) => this.isEjected(i.serviceId, now)).length;
    if (ejectedNow >= cap) return false;
    record.timesEjected++;
    record.failures = 0;
    record.ejectedUntil =
      now + Math.min(this.policy.maxEjectionMs, this.policy.baseEjectionMs * record.timesEjected);
    this.ejectionsUntil = Math.max(this.ejectionsUntil, record.ejectedUntil);
    return true;
  }

  isEjected(serviceId: string, now = this.now()): boolean {
    return (this.records.get(serviceId)?.ejectedUntil ?? 0) > now;
  }

  /** Forget instances that left the passing set. */
  retain(serviceIds: ReadonlySet<string>): void {
    for (const id of this.records.keys()) if (!serviceIds.has(id)) this.records.delete(id);
  }
}
