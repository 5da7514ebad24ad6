import { Inject, Injectable, Module } from '@nestjs/common';
import { ConfigModule, ConfigService } from '@nestjs/config';
import {
  DISCOVERY_PROVIDER,
  DiscoveryModule,
  type DiscoveryModuleOptions,
  type ServiceInstance,
} from '@athomic/discovery';
import type { ServiceDiscoveryProtocol } from '@athomic/discovery';

/**
 * A consumer: asks Consul who is alive. It injects the protocol by token, as any sharding or
 * routing service would, and knows nothing about Consul.
 */
@Injectable()
export class DirectoryService {
  constructor(@Inject(DISCOVERY_PROVIDER) private readonly discovery: ServiceDiscoveryProtocol) {}

  /** The passing instances of `name`, sorted by serviceId. */
  instancesOf(name: string): Promise<ServiceInstance[]> {
    return this.discovery.discover(name);
  }

  /** Deregisters an instance that cannot do it itself (it crashed). */
  forget(serviceId: string): Promise<boolean> {
    return this.discovery.deregister(serviceId);
  }
}

/** The directory app: a discovery client only (it does not register itself). */
@Module({
  imports: [
    ConfigModule.forRoot({ ignoreEnvFile: true }),
    DiscoveryModule.forRootAsync({
      imports: [ConfigModule],
      inject: [ConfigService],
      useFactory: (config: ConfigService): DiscoveryModuleOptions => ({
        autoRegister: false,
        consul: {
          host: config.getOrThrow<string>('DEMO_CONSUL_HOST'),
          port: Number(config.getOrThrow<string>('DEMO_CONSUL_PORT')),
          secure: config.get<string>('DEMO_CONSUL_SECURE') === 'true',
        },
      }),
    }),
  ],
  providers: [DirectoryService],
})
export class DirectoryModule {}
