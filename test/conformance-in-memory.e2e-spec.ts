import 'reflect-metadata';
import type { INestApplicationContext } from '@nestjs/common';
import { InMemoryCatalog } from '../lib/testing/in-memory.catalog.js';
import {
  DiscoveryTestingModule,
  InMemoryDiscovery,
  type DiscoveryTestingModuleOptions,
  type InMemoryInstance,
} from '../lib/testing/index.js';
import {
  AppHarness,
  describeDiscoveryConformance,
  type ConformanceDriver,
} from './support/index.js';

// The conformance suite (test/support/discovery-conformance.harness.ts) on the in-memory double:
// membership changed through InMemoryDiscovery, as a user's test does.

function inMemoryDriver(): ConformanceDriver {
  const apps = new AppHarness<DiscoveryTestingModuleOptions>(DiscoveryTestingModule);
  let app: INestApplicationContext | undefined;
  const declared = new Map<string, InMemoryInstance[]>();

  const memory = (): InMemoryDiscovery => {
    if (!app) throw new Error('start() an app first: the double lives in it');
    return app.get(InMemoryDiscovery);
  };
  const nameOf = (serviceId: string): string =>
    [...declared].find(([, list]) => list.some((i) => i.serviceId === serviceId))?.[0] ?? '';

  return {
    node: 'in-memory',
    localDatacenter: 'dc1',
    async start(options) {
      app = await apps.start(options);
      return app;
    },
    addInstance(name, instance, passing = true) {
      const list = (declared.get(name) ?? []).filter((i) => i.serviceId !== instance.serviceId);
      declared.set(name, [...list, instance]);
      memory().setInstances(name, declared.get(name)!);
      memory().setPassing(instance.serviceId, passing);
      return Promise.resolve();
    },
    setPassing(serviceId, passing) {
      memory().setPassing(serviceId, passing);
      return Promise.resolve();
    },
    removeInstance(serviceId) {
      const name = nameOf(serviceId);
      declared.set(
        name,
        (declared.get(name) ?? []).filter((i) => i.serviceId !== serviceId),
      );
      memory().setInstances(name, declared.get(name)!);
      return Promise.resolve();
    },
    holds(serviceId) {
      // Not public: what the double's agent holds, as the Consul driver reads /v1/agent/services.
      return Promise.resolve(app!.get(InMemoryCatalog, { strict: false }).has(serviceId));
    },
    async reset() {
      await apps.closeAll();
      app = undefined;
      declared.clear();
    },
  };
}

describeDiscoveryConformance('in-memory double', inMemoryDriver);
