import { ConfigurableModuleBuilder } from '@nestjs/common';

export interface ClusterScheduleModuleOptions {
  /** Where the jobs' records live: `<keyPrefix>/<service name>/<job name>`. Default `'athomic/jobs'`. */
  keyPrefix?: string;
}

export const {
  ConfigurableModuleClass: ConfigurableClusterScheduleModule,
  MODULE_OPTIONS_TOKEN: CLUSTER_SCHEDULE_OPTIONS,
} = new ConfigurableModuleBuilder<ClusterScheduleModuleOptions>({ moduleName: 'ClusterSchedule' })
  .setClassMethodName('forRoot')
  .build();
