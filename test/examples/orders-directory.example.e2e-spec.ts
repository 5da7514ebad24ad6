import 'reflect-metadata';
// The README's "Testing your code with the double" example, as a consumer writes it (imports by
// package name, so it runs the built dist/ through package.json's exports). The README shows the
// region below verbatim (readme-snippets.example.e2e-spec.ts checks it).
// #region readme
import { Inject, Injectable } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { DISCOVERY_PROVIDER, type ServiceDiscoveryProtocol } from '@athomic/discovery';
import { DiscoveryTestingModule, InMemoryDiscovery } from '@athomic/discovery/testing';

/** The code under test: asks discovery where `orders` runs. */
@Injectable()
class OrdersDirectory {
  constructor(@Inject(DISCOVERY_PROVIDER) private readonly discovery: ServiceDiscoveryProtocol) {}

  async urls(): Promise<string[]> {
    const instances = await this.discovery.discover('orders');
    return instances.map((i) => `http://${i.address}:${i.port}`);
  }
}

describe('OrdersDirectory', () => {
  it('lists the passing instances of orders', async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [
        DiscoveryTestingModule.forRoot({
          services: { orders: [{ serviceId: 'orders-1', port: 5001 }] },
        }),
      ],
      providers: [OrdersDirectory],
    }).compile();
    const directory = moduleRef.get(OrdersDirectory);
    const memory = moduleRef.get(InMemoryDiscovery);

    expect(await directory.urls()).toEqual(['http://127.0.0.1:5001']);

    memory.setInstances('orders', [
      { serviceId: 'orders-1', port: 5001 },
      { serviceId: 'orders-2', port: 5002 },
    ]);
    memory.setPassing('orders-1', false);
    expect(await directory.urls()).toEqual(['http://127.0.0.1:5002']);

    await moduleRef.close();
  });
});
// #endregion readme
