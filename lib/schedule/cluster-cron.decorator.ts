import { CLUSTER_CRON_JOBS } from './schedule.constants.js';
import type { ClusterCronOptions } from './job.types.js';

/** A `@ClusterCron` as written, checked at boot (`job.arguments.ts`). */
export interface DeclaredJob {
  key: string | symbol;
  expression: unknown;
  options: unknown;
}

/**
 * Runs the method once per scheduled instant across the instances of the service: on the owner of
 * partition `partitionOf('job:' + name)`, after claiming the instant in Consul. The method gets a
 * `JobFire`. Requires `sharding.mode: 'exclusive'` and `ClusterScheduleModule`.
 */
export function ClusterCron(expression: string, options: ClusterCronOptions): MethodDecorator {
  return (target, key) => {
    const owner = target.constructor;
    const declared = (Reflect.getOwnMetadata(CLUSTER_CRON_JOBS, owner) as DeclaredJob[]) ?? [];
    // Recorded on the class, not the method: a decorated non-method is still seen (and refused).
    Reflect.defineMetadata(CLUSTER_CRON_JOBS, [...declared, { key, expression, options }], owner);
  };
}
