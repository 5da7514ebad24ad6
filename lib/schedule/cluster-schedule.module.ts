import { Module } from '@nestjs/common';
import { DiscoveryModule as NestDiscoveryModule } from '@nestjs/core';
import { ConfigurableClusterScheduleModule } from './cluster-schedule.module-definition.js';
import { ClusterScheduler } from './cluster-scheduler.js';

/**
 * `@ClusterCron` jobs: import it next to `DiscoveryModule` (exclusive sharding) and
 * `@nestjs/schedule`'s `ScheduleModule.forRoot()`.
 */
@Module({
  imports: [NestDiscoveryModule],
  providers: [ClusterScheduler],
  exports: [ClusterScheduler],
})
export class ClusterScheduleModule extends ConfigurableClusterScheduleModule {}
