// The README's "Recipes → An HTTP check through terminus" (typechecked; shown verbatim in the
// README, see readme-snippets.example.e2e-spec.ts).
// #region readme
// web.module.ts: the check URL, the registered address and the listening port from one config
import { Module } from '@nestjs/common';
import { ConfigModule, ConfigService } from '@nestjs/config';
import { DiscoveryModule, type DiscoveryModuleOptions } from '@athomic/discovery';
import { HealthModule } from './health.module.js';

@Module({
  imports: [
    ConfigModule.forRoot(),
    DiscoveryModule.forRootAsync({
      isGlobal: true, // HealthModule's DiscoveryHealthIndicator injects DiscoveryService
      imports: [ConfigModule],
      inject: [ConfigService],
      useFactory: (config: ConfigService): DiscoveryModuleOptions => {
        const address = config.getOrThrow<string>('ADVERTISE_ADDRESS'); // the agent probes it
        const port = Number(config.getOrThrow<string>('PORT'));
        return {
          service: { name: 'orders-web', address, port },
          healthCheck: {
            http: `http://${address}:${port}/health`,
            interval: '5s',
            timeout: '2s',
            deregisterCriticalServiceAfter: '1m',
          },
        };
      },
    }),
    HealthModule,
  ],
})
export class AppModule {}
// #endregion readme
