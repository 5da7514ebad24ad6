/** Class metadata: the `@ClusterCron` declarations of a class (`DeclaredJob[]`). */
export const CLUSTER_CRON_JOBS = Symbol('CLUSTER_CRON_JOBS');

/** `@nestjs/schedule`'s own metadata key of a `@Cron` method's options (its `name` among them). */
export const SCHEDULE_CRON_OPTIONS = 'SCHEDULE_CRON_OPTIONS';

export const DEFAULT_JOB_KEY_PREFIX = 'athomic/jobs';
export const DEFAULT_MISFIRE_GRACE_MS = 60_000;
