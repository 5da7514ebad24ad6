// The README's "Recipes → Several datacenters" (typechecked; shown verbatim in the README, see
// readme-snippets.example.e2e-spec.ts).
// #region readme
import { Injectable, Logger, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import type { Subscription } from 'rxjs';
import { DiscoveryService, type ServiceInstance } from '@athomic/discovery';

const DC2 = { datacenter: 'dc2' };

/** payments in this datacenter, or in dc2 while none passes here. */
@Injectable()
export class PaymentsRoutes implements OnModuleInit, OnModuleDestroy {
  private readonly logger = new Logger(PaymentsRoutes.name);
  private remote?: Subscription;

  constructor(private readonly discovery: DiscoveryService) {}

  onModuleInit(): void {
    // One blocking query through the local agent, which forwards it to dc2's servers; holding a
    // subscription keeps dc2's set in memory (watch.services only covers the own datacenter).
    this.remote = this.discovery.watch('payments', DC2).subscribe();
  }

  onModuleDestroy(): void {
    this.remote?.unsubscribe();
  }

  async targets(): Promise<ServiceInstance[]> {
    const local = await this.discovery.discover('payments'); // from memory if 'payments' is watched
    if (local.length > 0) return local;
    // The same name + query as the watch: from memory once it has its first set. While dc2 is
    // unreachable that is the last set dc2 gave, and freshness() says so.
    const remote = await this.discovery.discover('payments', DC2);
    if (this.discovery.freshness('payments', DC2)?.stale) {
      this.logger.warn('dc2 did not answer the last refresh: its last known payments are used');
    }
    return remote;
  }
}
// #endregion readme
