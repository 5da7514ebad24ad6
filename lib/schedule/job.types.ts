/** What a `@ClusterCron` handler receives for each fire. */
export interface JobFire {
  /** The job's name. */
  name: string;
  /** The scheduled instant T (from the expression and time zone), the same on every instance. */
  scheduledAt: Date;
  /** The partition's fencing token (its lock's `LockIndex`): higher after any change of owner. */
  token: number;
  /** Aborts when this instance loses the job's partition, or at shutdown. */
  signal: AbortSignal;
  /** The run is a catch-up after a failover or handover, or an at-least-once re-run. */
  late: boolean;
}

/** `at-most-once`: a claimed fire whose runner died is not run again; `at-least-once`: it is. */
export type JobDelivery = 'at-most-once' | 'at-least-once';

/** Quartz's misfire policies: run the latest missed instant (within the grace), or skip them all. */
export type JobMisfire = 'run-once' | 'skip';

export interface ClusterCronOptions {
  /** Unique among all the cron jobs of `SchedulerRegistry`; places the job on a partition. */
  name: string;
  /** IANA time zone of the expression; the process's own by default. */
  timeZone?: string;
  /** Default `'at-most-once'`. */
  delivery?: JobDelivery;
  /** Default `'run-once'`. */
  misfire?: JobMisfire;
  /** How late a missed instant may still run (`misfire: 'run-once'`); default 60,000. */
  misfireGraceMs?: number;
  /** While the previous run goes on, a fire is skipped (the only policy). */
  overlap?: 'skip';
}

/** A validated job. */
export interface JobDefinition {
  name: string;
  expression: string;
  timeZone?: string;
  delivery: JobDelivery;
  misfire: JobMisfire;
  misfireGraceMs: number;
  overlap: 'skip';
}
