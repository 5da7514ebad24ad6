import {
  Controller,
  Get,
  Injectable,
  Module,
  Param,
  type OnApplicationBootstrap,
} from '@nestjs/common';
import { ConfigModule, ConfigService } from '@nestjs/config';
import { ScheduleModule } from '@nestjs/schedule';
import {
  DiscoveryModule,
  DiscoveryService,
  ShardingService,
  type DiscoveryModuleOptions,
} from '@athomic/discovery';
import { ClusterCron, ClusterScheduleModule, type JobFire } from '@athomic/discovery/schedule';

import type { JobMessage } from './support/children.js';

/** Cluster jobs need exclusive sharding: the cooperative variant of the demo runs none. */
const EXCLUSIVE = process.env.DEMO_SHARD_MODE !== 'cooperative';

/** The demo's keyspace: orders are split into this many partitions. */
export const PARTITIONS = 32;

/**
 * The job the module exists for: each instance works on the partitions it owns, and only on
 * them. A real worker would consume partition p's queue until `signal` aborts (the partition
 * moved to another instance, or this one is shutting down); this one just waits for that.
 */
@Injectable()
export class OrdersWorker implements OnApplicationBootstrap {
  constructor(private readonly sharding: ShardingService) {}

  onApplicationBootstrap(): void {
    this.sharding.onPartition(
      (_partition, { signal }) =>
        new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve())),
    );
  }
}

/** A job every second, run once per instant across the instances; each run goes to the parent. */
@Injectable()
export class OrdersDigest {
  constructor(private readonly discovery: DiscoveryService) {}

  @ClusterCron('* * * * * *', { name: 'digest' })
  digest({ scheduledAt, token, late }: JobFire): void {
    if (!process.connected) return;
    const message: JobMessage = {
      type: 'job',
      serviceId: this.discovery.self.serviceId,
      at: scheduledAt.getTime(),
      token,
      late,
    };
    process.send?.(message);
  }
}

/** Who am I, and who owns an order (so the demo can call what it discovered). */
@Controller()
export class OrdersController {
  constructor(
    private readonly discovery: DiscoveryService,
    private readonly sharding: ShardingService,
  ) {}

  @Get()
  whoami(): { serviceId: string; pid: number; owned: number[] } {
    return {
      serviceId: this.discovery.self.serviceId,
      pid: process.pid,
      owned: this.sharding.owned(),
    };
  }

  @Get('orders/:key/owner')
  owner(@Param('key') key: string): {
    key: string;
    partition: number;
    owner?: string;
    mine: boolean;
    token?: number;
  } {
    const partition = this.sharding.partitionOf(key);
    return {
      key,
      partition,
      owner: this.sharding.ownerOf(partition)?.serviceId,
      mine: this.sharding.owns(partition),
      token: this.sharding.token(partition),
    };
  }
}

/**
 * The example service `orders`: registers itself in Consul on bootstrap (TTL check, heartbeat),
 * shares the PARTITIONS partitions with the other passing instances (exclusive: a Consul lock
 * per partition, with a fencing token), and on shutdown releases them, then deregisters. Everything instance-specific comes from the environment
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
          // A short TTL so that a crashed instance is noticed within seconds (heartbeat every 1 s).
          healthCheck: { ttl: '3s', deregisterCriticalServiceAfter: '1m' },
          sharding: {
            partitions: PARTITIONS,
            mode:
              config.get<string>('DEMO_SHARD_MODE') === 'cooperative' ? 'cooperative' : 'exclusive',
            // A crashed holder's locks are free again lockDelay after Consul notices (default 5s).
            lock: { lockDelay: '1s' },
          },
          // Fail the boot loudly instead of retrying in the background: a demo wants to know.
          retry: { failFast: true, maxAttempts: 3, initialDelayMs: 100, maxDelayMs: 1000 },
        };
      },
    }),
    ...(EXCLUSIVE ? [ScheduleModule.forRoot(), ClusterScheduleModule.forRoot()] : []),
  ],
  controllers: [OrdersController],
  providers: [OrdersWorker, ...(EXCLUSIVE ? [OrdersDigest] : [])],
})
export class OrdersModule {}
