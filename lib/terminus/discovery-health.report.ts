import type { DiscoveryStatus, SelfStatus } from '../registration/registration-status.js';
import type { Freshness } from '../watch/service-watch.js';

/** One name of `watch.services`: its set is not known yet, or when Consul last confirmed it. */
export type WatchHealth =
  | { known: false }
  | {
      known: true;
      /** ISO time of Consul's last answer. */
      updatedAt: string;
      ageMs: number;
      /** The last refresh failed: the set served is the last one Consul gave. */
      stale: boolean;
    };

/** What the indicator reports under its key (next to terminus's own `status`). */
export interface DiscoveryHealthDetails {
  agent: DiscoveryStatus['agent'];
  /** Absent when no service is configured. */
  self?: SelfStatus;
  /** The names of `watch.services`, when there are any. */
  watches?: Record<string, WatchHealth>;
  /** When sharding is configured: how many partitions this instance owns. */
  sharding?: { owned: number };
  /** With `@athomic/discovery/schedule`: the `@ClusterCron` jobs this instance runs now. */
  jobs?: string[];
  /** Why it is down; absent when up. */
  reasons?: string[];
}

export interface HealthReportInput {
  status: DiscoveryStatus;
  requireRegistered: boolean;
  maxStaleMs?: number;
  watches: readonly { name: string; freshness: Freshness | undefined }[];
  /** Owned partitions; `undefined` when sharding is not configured. */
  owned?: number;
  /** Jobs run here; `undefined` without `ClusterScheduleModule`. */
  jobs?: string[];
  /** `Date.now()` */
  now: number;
}

export function healthReport(input: HealthReportInput): {
  up: boolean;
  details: DiscoveryHealthDetails;
} {
  const { status, requireRegistered, maxStaleMs, now } = input;
  const details: DiscoveryHealthDetails = { agent: status.agent };
  const reasons: string[] = [];
  if (!status.agent.ok) reasons.push(status.agent.error ?? 'the Consul agent failed');
  if (status.self) {
    details.self = status.self;
    if (requireRegistered && !status.self.passing) reasons.push(selfReason(status.self));
  }
  if (input.watches.length > 0) {
    details.watches = {};
    for (const { name, freshness } of input.watches) {
      const health = watchHealth(freshness, now);
      details.watches[name] = health;
      if (maxStaleMs === undefined) continue;
      if (!health.known) reasons.push(`watch of "${name}" has no set yet`);
      else if (health.stale && health.ageMs > maxStaleMs) {
        reasons.push(
          `watch of "${name}" is stale: last confirmed ${health.ageMs} ms ago (maxStaleMs ${maxStaleMs})`,
        );
      }
    }
  }
  if (input.owned !== undefined) details.sharding = { owned: input.owned };
  if (input.jobs !== undefined) details.jobs = input.jobs;
  if (reasons.length > 0) details.reasons = reasons;
  return { up: reasons.length === 0, details };
}

function watchHealth(freshness: Freshness | undefined, now: number): WatchHealth {
  if (!freshness) return { known: false };
  return {
    known: true,
    updatedAt: freshness.updatedAt.toISOString(),
    ageMs: Math.max(0, now - freshness.updatedAt.getTime()),
    stale: freshness.stale,
  };
}

function selfReason(self: SelfStatus): string {
  const name = `"${self.serviceId}"`;
  if (self.state !== 'registered') return `${name} is ${self.state}, not registered`;
  if (self.held === undefined) return `${name} cannot be confirmed: the agent read failed`;
  if (!self.held) return `${name} is not held by the agent (restarted?)`;
  if (self.failingChecks) {
    const checks = Object.entries(self.failingChecks).map(([id, status]) => `${id} ${status}`);
    return `${name} is not passing in Consul: ${checks.join(', ')}`;
  }
  return self.lastPassAgoMs === undefined
    ? `${name} has not passed its TTL check yet`
    : `${name} last passed its TTL check ${self.lastPassAgoMs} ms ago`;
}
