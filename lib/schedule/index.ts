// @athomic/discovery/schedule: cron jobs that run once per scheduled instant across the instances.
export { ClusterCron } from './cluster-cron.decorator.js';
export { ClusterScheduleModule } from './cluster-schedule.module.js';
export type { ClusterScheduleModuleOptions } from './cluster-schedule.module-definition.js';
export { ClusterScheduler } from './cluster-scheduler.js';
export type { ClusterCronOptions, JobDelivery, JobFire, JobMisfire } from './job.types.js';
