import path from 'node:path';
import { startChildApp, type ChildApp } from './child-app.harness.js';
import { repoRoot } from './consul-agent.harness.js';

// Worker processes running two cluster jobs (test/support/fixtures/schedule-child.mjs), and what
// their own logs say: runs with their instants and tokens, and the instants reported skipped.

export const SCHEDULE_CHILD_FIXTURE = path.join(
  repoRoot(),
  'test',
  'support',
  'fixtures',
  'schedule-child.mjs',
);

export interface ScheduleChildSettings {
  host: string;
  port: number;
  serviceId: string;
  servicePort: number;
  /** 'claim' = @ClusterCron; 'naive' = a plain @Cron gated by owns() (default 'claim'). */
  gate?: 'claim' | 'naive';
  ttl?: string;
  lockDelay?: string;
}

export interface ScheduleChild {
  serviceId: string;
  app: ChildApp;
}

/** One run of a job, as its worker printed it; `end` absent while it runs (or if it never ended). */
export interface JobRun {
  worker: string;
  job: string;
  at: number;
  token: number;
  late: boolean;
  start: number;
  end?: number;
}

export function startScheduleChild(s: ScheduleChildSettings): ScheduleChild {
  const options = {
    consul: { host: s.host, port: s.port, timeoutMs: 2_000 },
    service: { name: 'scheduled', id: s.serviceId, address: '127.0.0.1', port: s.servicePort },
    healthCheck: { ttl: s.ttl ?? '3s', deregisterCriticalServiceAfter: '1m' },
    retry: { maxAttempts: 3, initialDelayMs: 50, maxDelayMs: 500 },
    shutdownTimeoutMs: 5_000,
    sharding: {
      partitions: 8,
      mode: 'exclusive',
      settleMs: 200,
      handoffDelayMs: 100,
      drainTimeoutMs: 2_000,
      lock: { lockDelay: s.lockDelay ?? '1s' },
    },
  };
  const app = startChildApp({
    options,
    maxLifeMs: 240_000,
    fixture: { path: SCHEDULE_CHILD_FIXTURE, env: { CHILD_SCHEDULE_GATE: s.gate ?? 'claim' } },
  });
  return { serviceId: s.serviceId, app };
}

/** Every run the workers printed, by start time. */
export function jobRuns(children: readonly ScheduleChild[]): JobRun[] {
  const runs: JobRun[] = [];
  for (const child of children) {
    const ends = child.app.all('run-end');
    for (const start of child.app.all('run-start')) {
      const end = ends.find((e) => e.job === start.job && e.at === start.at);
      runs.push({
        worker: child.serviceId,
        job: start.job as string,
        at: start.at as number,
        token: start.token as number,
        late: start.late as boolean,
        start: start.t,
        end: end?.t,
      });
    }
  }
  return runs.sort((a, b) => a.start - b.start);
}

/** The instants (ms) each worker's log reported skipped for `job`. */
export function skippedInstants(children: readonly ScheduleChild[], job: string): number[] {
  const line = new RegExp(`Job "${job}": skipped \\d+\\+? instant\\(s\\): .*$`, 'gm');
  return children.flatMap((child) =>
    [...child.app.output().matchAll(line)].flatMap((m) =>
      [...m[0].matchAll(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/g)].map((iso) =>
        Date.parse(iso[0]),
      ),
    ),
  );
}
