import { ConfigurableModuleBuilder } from '@nestjs/common';
import type { DiscoveryModuleOptions } from './settings/discovery-module-options.interface.js';

export const {
  ConfigurableModuleClass: ConfigurableDiscoveryModule,
  MODULE_OPTIONS_TOKEN: DISCOVERY_MODULE_OPTIONS,
  OPTIONS_TYPE: DISCOVERY_OPTIONS_TYPE,
  ASYNC_OPTIONS_TYPE: DISCOVERY_ASYNC_OPTIONS_TYPE,
} = new ConfigurableModuleBuilder<DiscoveryModuleOptions>({ moduleName: 'Discovery' })
  .setClassMethodName('forRoot')
  .setFactoryMethodName('createDiscoveryOptions')
  .setExtras({ isGlobal: false }, (definition, extras) => ({
    ...definition,
    global: extras.isGlobal,
  }))
  .build();

export type DiscoveryModuleAsyncOptions = typeof DISCOVERY_ASYNC_OPTIONS_TYPE;
