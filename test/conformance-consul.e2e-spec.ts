import 'reflect-metadata';
import type { DiscoveryModuleOptions } from '../lib/index.js';
import {
  describeDiscoveryConformance,
  startConsulAgent,
  stopAllAgents,
  TestApps,
  type ConformanceDriver,
  type ConsulAgent,
} from './support/index.js';

// The conformance suite (test/support/discovery-conformance.harness.ts) on a real Consul agent:
// membership changed through the raw HTTP API (TTL checks passed and failed by hand).

let agent: ConsulAgent;

beforeAll(async () => {
  agent = await startConsulAgent();
});

afterAll(async () => {
  await stopAllAgents();
});

async function consulDriver(): Promise<ConformanceDriver> {
  const apps = new TestApps();
  const api = agent.api();
  const added = new Set<string>();
  const self = (await api.request('GET', '/v1/agent/self')).json as {
    Config: { NodeName: string; Datacenter: string };
  };

  return {
    node: self.Config.NodeName,
    datacenter: self.Config.Datacenter,
    localDatacenter: self.Config.Datacenter,
    start({ self: own, sharding }) {
      const options: DiscoveryModuleOptions = {
        consul: { host: '127.0.0.1', port: agent.httpPort },
        autoRegister: own !== undefined,
        sharding,
      };
      if (own) {
        options.service = {
          name: own.name,
          port: own.port,
          id: own.serviceId,
          address: '127.0.0.1',
        };
      }
      return apps.start(options);
    },
    async addInstance(name, instance, passing = true) {
      added.add(instance.serviceId);
      await api.registerService({
        Name: name,
        ID: instance.serviceId,
        Address: '127.0.0.1',
        Port: instance.port,
        Tags: instance.tags ?? [],
        Meta: instance.meta ?? {},
        Check: { TTL: '10m', Status: passing ? 'passing' : 'critical' },
      });
    },
    async setPassing(serviceId, passing) {
      await (passing ? api.passTtl : api.failTtl)(`service:${serviceId}`);
    },
    async removeInstance(serviceId) {
      await api.deregisterService(serviceId);
    },
    async holds(serviceId) {
      return Object.hasOwn(await api.agentServices(), serviceId);
    },
    async reset() {
      await apps.closeAll();
      await Promise.all([...added].map((id) => api.deregisterService(id)));
      added.clear();
    },
  };
}

describeDiscoveryConformance('Consul agent', consulDriver);
