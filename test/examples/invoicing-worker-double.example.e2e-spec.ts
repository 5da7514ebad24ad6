import 'reflect-metadata';
// The README's "Recipes → Unit tests with the double" example (the worker recipe's class on the
// in-memory double), as a consumer writes it; shown verbatim in the README
// (readme-snippets.example.e2e-spec.ts).
// #region readme
import { Test } from '@nestjs/testing';
import { filter, firstValueFrom } from 'rxjs';
import { ShardingService } from '@athomic/discovery';
import { DiscoveryTestingModule, InMemoryDiscovery } from '@athomic/discovery/testing';
import { InvoiceWorker } from './invoicing-worker.module.js';

describe('InvoiceWorker', () => {
  it('works on the partitions this instance owns, and on no other', async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [
        DiscoveryTestingModule.forRoot({
          self: { name: 'invoicer', port: 9464, serviceId: 'invoicer-1' },
          services: { invoicer: [{ serviceId: 'invoicer-2', port: 9464 }] },
          sharding: { partitions: 8, mode: 'exclusive', settleMs: 10 },
        }),
      ],
      providers: [InvoiceWorker],
    }).compile();
    await moduleRef.init(); // bootstrap: self registers, sharding starts, handlers subscribe
    const sharding = moduleRef.get(ShardingService);
    const worker = moduleRef.get(InvoiceWorker);
    const owned = (count: number) =>
      firstValueFrom(sharding.assignments$.pipe(filter((a) => a.owned.length === count)));

    // Two passing instances: this one owns half of the table, with a fencing token each.
    const half = await owned(4);
    expect([...worker.running.keys()].sort((a, b) => a - b)).toEqual(half.owned);
    expect(half.owned.every((p) => sharding.token(p) === worker.running.get(p))).toBe(true);

    // The other instance fails its checks: this one takes over all eight.
    moduleRef.get(InMemoryDiscovery).setPassing('invoicer-2', false);
    await owned(8);
    expect(worker.running.size).toBe(8);

    await moduleRef.close(); // handlers aborted and drained, locks released, deregistered
    expect(worker.running.size).toBe(0);
  });
});
// #endregion readme
