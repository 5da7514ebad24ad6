import type { JobSchedule } from './job-schedule.js';
import type { JobDefinition } from './job.types.js';

/** The job's record in Consul, at `<keyPrefix>/<service name>/<job name>`. */
export interface JobRecord {
  /** The latest claimed instant, ISO-8601. */
  last: string;
  /** The `LockIndex` of the claim. */
  token: number;
  state: 'claimed' | 'done';
}

/**
 * What a claim writes and what it covers: the record moves from `last` to `record.last`, and every
 * instant in between is run (`run`) or reported skipped (`skipped`) by the one claim that commits.
 */
export interface Claim {
  record: JobRecord;
  /** The instant to run; absent = the claim only reports `skipped`. */
  run?: { scheduledAt: Date; late: boolean };
  skipped: Date[];
  /** More instants than `skipped` lists were skipped (a long gap). */
  more: boolean;
}

export interface DecisionInput {
  definition: Pick<JobDefinition, 'delivery' | 'misfire' | 'misfireGraceMs'>;
  schedule: JobSchedule;
  /** The record as read; absent = never claimed. */
  record?: JobRecord;
  /** This instance's token for the partition. */
  token: number;
}

/**
 * At a fire of T: T runs unless the record already has T or later; the instants missed since
 * `last` are reported skipped (T is the latest one, and it runs on time).
 */
export function decideFire(input: DecisionInput, scheduledAt: Date): Claim | undefined {
  const last = input.record && new Date(input.record.last);
  if (last && last >= scheduledAt) return undefined;
  const { instants, more } = last
    ? input.schedule.between(last, scheduledAt)
    : { instants: [], more: false };
  return {
    record: { last: scheduledAt.toISOString(), token: input.token, state: 'claimed' },
    run: { scheduledAt, late: false },
    skipped: instants,
    more,
  };
}

/**
 * At the acquisition of the partition, at `now`: `at-least-once` re-runs a fire an earlier owner
 * claimed but did not finish; otherwise the instants missed since `last` (a failover or handover
 * spanned them) go by the misfire policy: `run-once` runs the latest now, late, if it is within
 * `misfireGraceMs`, and reports the others skipped; `skip` reports them all. Never claimed → nothing
 * (the next fire starts the record).
 */
export function decideAcquisition(input: DecisionInput, now: Date): Claim | undefined {
  const { record, definition, token } = input;
  if (!record) return undefined;
  const last = new Date(record.last);
  if (
    definition.delivery === 'at-least-once' &&
    record.state === 'claimed' &&
    record.token < token
  ) {
    return {
      record: { last: record.last, token, state: 'claimed' },
      run: { scheduledAt: last, late: true },
      skipped: [],
      more: false,
    };
  }
  const latest = input.schedule.latestAtOrBefore(now);
  if (!latest || latest <= last) return undefined;
  const { instants, more } = input.schedule.between(last, latest);
  const runLatest =
    definition.misfire === 'run-once' &&
    now.getTime() - latest.getTime() <= definition.misfireGraceMs;
  return {
    record: { last: latest.toISOString(), token, state: runLatest ? 'claimed' : 'done' },
    run: runLatest ? { scheduledAt: latest, late: true } : undefined,
    skipped: runLatest ? instants : [...instants, latest],
    more,
  };
}

/** The record as stored; `undefined` for a value that is not one (written by something else). */
export function parseJobRecord(value: string): JobRecord | undefined {
  try {
    const parsed = JSON.parse(value) as Partial<JobRecord>;
    const valid =
      typeof parsed.last === 'string' &&
      !Number.isNaN(Date.parse(parsed.last)) &&
      typeof parsed.token === 'number' &&
      (parsed.state === 'claimed' || parsed.state === 'done');
    return valid ? (parsed as JobRecord) : undefined;
  } catch {
    return undefined;
  }
}
