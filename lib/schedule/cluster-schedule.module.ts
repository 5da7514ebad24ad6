import { type DynamicModule, Module } from '@nestjs/common';
import { DiscoveryModule as NestDiscoveryModule } from '@nestjs/core';
import { CLUSTER_JOBS } from '../discovery.constants.js';
import {
  ConfigurableClusterScheduleModule,
  type ClusterScheduleModuleOptions,
} from './cluster-schedule.module-definition.js';
import { ClusterScheduler } from './cluster-scheduler.js';

/**
 * `@ClusterCron` jobs: import it next to `DiscoveryModule` (exclusive sharding) and
 * `@nestjs/schedule`'s `ScheduleModule.forRoot()`.
 */
@Module({
  imports: [NestDiscoveryModule],
  providers: [ClusterScheduler, { provide: CLUSTER_JOBS, useExisting: ClusterScheduler }],
  exports: [ClusterScheduler, CLUSTER_JOBS],
})
export class ClusterScheduleModule extends ConfigurableClusterScheduleModule {
  /** Every option has its default: `forRoot()` is enough. */
  static forRoot(options: ClusterScheduleModuleOptions = {}): DynamicModule {
    return super.forRoot(options);
  }
}
