// The README's "Recipes → A worker with a TTL check" module, as a consumer writes it (imports by
// package name: the built dist/). Run on a real agent by invoicing-worker.example.e2e-spec.ts and on
// the double by invoicing-worker-double.example.e2e-spec.ts; shown verbatim in the README
// (readme-snippets.example.e2e-spec.ts).
// #region readme
// invoicing-worker.module.ts
import { setTimeout as sleep } from 'node:timers/promises';
import {
  Injectable,
  Logger,
  Module,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
} from '@nestjs/common';
import { DiscoveryModule, ShardingService, type DiscoveryModuleOptions } from '@athomic/discovery';

export const discoveryOptions: DiscoveryModuleOptions = {
  // consul.*: from CONSUL_HTTP_ADDR / CONSUL_HTTP_TOKEN / CONSUL_CACERT …
  // No server here: the port only has to identify the instance (say, its metrics port).
  service: { name: 'invoicer', port: Number(process.env.METRICS_PORT ?? 9464) },
  // The default check, spelled out: this process passes it every ttl/3 itself, so it stays
  // passing exactly as long as the process is alive and can reach the agent.
  healthCheck: { ttl: '10s', deregisterCriticalServiceAfter: '1m' },
  // One owner per partition at most, with a fencing token (requires the TTL check).
  sharding: { partitions: 64, mode: 'exclusive' },
};

@Injectable()
export class InvoiceWorker implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(InvoiceWorker.name);
  /** Partitions being worked on → their fencing token. */
  readonly running = new Map<number, number | undefined>();
  private keepAlive?: NodeJS.Timeout;

  constructor(private readonly sharding: ShardingService) {}

  onApplicationBootstrap(): void {
    // No server socket holds the process open, and the module's own timers are unref'd.
    this.keepAlive = setInterval(() => undefined, 60_000);
    this.sharding.onPartition(async (partition, { signal, token }) => {
      this.running.set(partition, token);
      try {
        while (!signal.aborted) await this.invoiceBatch(partition, token, signal);
      } finally {
        this.running.delete(partition);
      }
    });
  }

  onApplicationShutdown(): void {
    clearInterval(this.keepAlive);
  }

  /** Your code: bill one batch of the partition's orders, sending `token` with every write. */
  private async invoiceBatch(partition: number, token: number | undefined, signal: AbortSignal) {
    this.logger.debug(`partition ${partition}: next batch (fencing token ${token})`);
    await sleep(1_000, undefined, { signal }).catch(() => undefined); // stands in for a queue read
  }
}

@Module({
  imports: [DiscoveryModule.forRoot(discoveryOptions)],
  providers: [InvoiceWorker],
})
export class InvoicingWorkerModule {}
// #endregion readme
