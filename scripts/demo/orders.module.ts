import { Controller, Get, Module } from '@nestjs/common';
import { ConfigModule, ConfigService } from '@nestjs/config';
import { DiscoveryModule, DiscoveryService, type DiscoveryModuleOptions } from '@athomic/discovery';

/** The example service's one endpoint: who am I (so the demo can call what it discovered). */
@Controller()
export class OrdersController {
  constructor(private readonly discovery: DiscoveryService) {}

  @Get()
  whoami(): { serviceId: string; pid: number } {
    return { serviceId: this.discovery.self.serviceId, pid: process.pid };
  }
}

/**
 * The example service `orders`: registers itself in Consul on bootstrap (TTL check, heartbeat)
 * and deregisters on shutdown. Everything instance-specific comes from the environment
 * through `ConfigService`, as a real service would do it.
 */
@Module({
  imports: [
    ConfigModule.forRoot({ ignoreEnvFile: true }),
    DiscoveryModule.forRootAsync({
      imports: [ConfigModule],
      inject: [ConfigService],
      useFactory: (config: ConfigService): DiscoveryModuleOptions => {
        const instance = config.getOrThrow<string>('ORDERS_INSTANCE');
        return {
          consul: {
            host: config.getOrThrow<string>('DEMO_CONSUL_HOST'),
            port: Number(config.getOrThrow<string>('DEMO_CONSUL_PORT')),
            secure: config.get<string>('DEMO_CONSUL_SECURE') === 'true',
          },
          service: {
            name: 'orders',
            id: `orders-${instance}`,
            address: '127.0.0.1',
            port: Number(config.getOrThrow<string>('ORDERS_PORT')),
            tags: ['demo', `zone-${config.getOrThrow<string>('ORDERS_ZONE')}`],
            meta: { instance, version: '1.0.0' },
          },
          // Fail the boot loudly instead of retrying in the background: a demo wants to know.
          retry: { failFast: true, maxAttempts: 3, initialDelayMs: 100, maxDelayMs: 1000 },
        };
      },
    }),
  ],
  controllers: [OrdersController],
})
export class OrdersModule {}
