import 'reflect-metadata';
import type { INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import {
  DISCOVERY_PROVIDER,
  DiscoveryModule,
  DiscoveryService,
  type ServiceDiscoveryProtocol,
  type ServiceInstance,
} from '../lib/index.js';
import { startConsulAgent, stopAllAgents, type ConsulAgent } from './support/index.js';

// discover / register / deregister through DISCOVERY_PROVIDER against one real Consul dev agent.
// Instances are registered with the raw HTTP API and their checks driven to each status.

/** A node registered straight into the catalog; nothing ever connects to its address. */
const EXT_NODE = '0-ext';
const EXT_NODE_ADDRESS = 'localhost';

let agent: ConsulAgent;
let nodeName: string;
let app: INestApplicationContext;
let discovery: ServiceDiscoveryProtocol;
const cleanups: (() => Promise<unknown>)[] = [];

async function registerRaw(body: Record<string, unknown>): Promise<void> {
  await agent.api().registerService(body);
  cleanups.push(() => agent.api().deregisterService(body.ID as string));
}

async function registerOnExtNode(service: Record<string, unknown>): Promise<void> {
  const res = await agent.api().request('PUT', '/v1/catalog/register', {
    Node: EXT_NODE,
    Address: EXT_NODE_ADDRESS,
    Service: service,
    Check: {
      CheckID: `ext:${service.ID as string}`,
      Name: 'external',
      ServiceID: service.ID,
      Status: 'passing',
    },
  });
  expect(res.status).toBe(200);
  cleanups.push(() => agent.api().request('PUT', '/v1/catalog/deregister', { Node: EXT_NODE }));
}

function ttlService(id: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    Name: id.replace(/-\d+$/, ''),
    ID: id,
    Address: '127.0.0.1',
    Port: 5000 + Number(/\d+$/.exec(id)?.[0] ?? 0),
    Check: { TTL: '60s' },
    ...extra,
  };
}

beforeAll(async () => {
  agent = await startConsulAgent();
  const self = (await agent.api().request('GET', '/v1/agent/self')).json as {
    Config: { NodeName: string };
  };
  nodeName = self.Config.NodeName;
});

beforeEach(async () => {
  app = await NestFactory.createApplicationContext(
    DiscoveryModule.forRoot({
      autoRegister: false,
      consul: { host: '127.0.0.1', port: agent.httpPort, timeoutMs: 1000 },
      retry: { maxAttempts: 2, initialDelayMs: 20, maxDelayMs: 100 },
    }),
    { logger: false },
  );
  await app.init();
  discovery = app.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
});

afterEach(async () => {
  await app.close();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

afterAll(stopAllAgents);

describe('discover', () => {
  it('returns exactly the passing instances, sorted by serviceId, each field mapped', async () => {
    const api = agent.api();
    // Registered out of order; checks end up never passed / passed / failed / warning.
    await registerRaw(ttlService('orders-4')); // never passed: critical
    await registerRaw(
      ttlService('orders-2', { Tags: ['blue', 'v1'], Meta: { zone: 'a', version: '2' } }),
    );
    await registerRaw(ttlService('orders-5')); // passed, then failed
    await registerRaw(ttlService('orders-1', { Address: undefined, Tags: ['green'] })); // no address
    await registerRaw(ttlService('orders-6')); // warning
    await registerRaw(ttlService('orders-3'));
    await api.passTtl('service:orders-2');
    await api.passTtl('service:orders-1');
    await api.passTtl('service:orders-3');
    await api.passTtl('service:orders-5');
    await api.failTtl('service:orders-5', 'down');
    await api.warnTtl('service:orders-6', 'degraded');
    // On a node that sorts before the agent's, so Consul's own order is not serviceId order.
    await registerOnExtNode({ ID: 'orders-9', Service: 'orders', Port: 5009 }); // no address
    await registerOnExtNode({
      ID: 'orders-8',
      Service: 'orders',
      Address: '127.0.0.1',
      Port: 5008,
    });

    const raw = await api.healthService('orders', { passing: true });
    const rawIds = raw.map((e) => e.Service.ID);
    expect([...rawIds].sort()).toEqual([
      'orders-1',
      'orders-2',
      'orders-3',
      'orders-8',
      'orders-9',
    ]);
    expect(rawIds).not.toEqual([...rawIds].sort()); // precondition: sorting is the library's job
    expect(raw.find((e) => e.Service.ID === 'orders-1')?.Service.Address).toBe('');

    const common = { name: 'orders', datacenter: 'dc1' };
    const expected: ServiceInstance[] = [
      {
        ...common,
        serviceId: 'orders-1',
        address: '127.0.0.1', // the agent node's address: the service registered none
        port: 5001,
        tags: ['green'],
        meta: {},
        node: nodeName,
      },
      {
        ...common,
        serviceId: 'orders-2',
        address: '127.0.0.1',
        port: 5002,
        tags: ['blue', 'v1'],
        meta: { zone: 'a', version: '2' },
        node: nodeName,
      },
      {
        ...common,
        serviceId: 'orders-3',
        address: '127.0.0.1',
        port: 5003,
        tags: [],
        meta: {},
        node: nodeName,
      },
      {
        ...common,
        serviceId: 'orders-8',
        address: '127.0.0.1', // its own address wins over its node's
        port: 5008,
        tags: [],
        meta: {},
        node: EXT_NODE,
      },
      {
        ...common,
        serviceId: 'orders-9',
        address: EXT_NODE_ADDRESS, // its node's address
        port: 5009,
        tags: [],
        meta: {},
        node: EXT_NODE,
      },
    ];
    expect(await discovery.discover('orders')).toEqual(expected);
    expect(await app.get(DiscoveryService).discover('orders')).toEqual(expected);
  });

  it('the tag query filters (and the datacenter query names the agent’s own)', async () => {
    await registerRaw(ttlService('carts-1', { Tags: ['blue'] }));
    await registerRaw(ttlService('carts-2', { Tags: ['green'] }));
    await registerRaw(ttlService('carts-3', { Tags: ['blue'] })); // stays critical
    await registerRaw(ttlService('carts-4', { Tags: ['blue', 'green'] }));
    for (const id of ['carts-1', 'carts-2', 'carts-4']) await agent.api().passTtl(`service:${id}`);

    const ids = async (tag?: string, datacenter?: string): Promise<string[]> =>
      (await discovery.discover('carts', { tag, datacenter })).map((i) => i.serviceId);
    expect(await ids()).toEqual(['carts-1', 'carts-2', 'carts-4']);
    expect(await ids('blue')).toEqual(['carts-1', 'carts-4']);
    expect(await ids('green')).toEqual(['carts-2', 'carts-4']);
    expect(await ids('red')).toEqual([]);
    expect(await ids('blue', 'dc1')).toEqual(['carts-1', 'carts-4']);
  });

  it('an unknown service name gives []', async () => {
    await expect(discovery.discover('no-such-service')).resolves.toEqual([]);
    await expect(app.get(DiscoveryService).discover('no-such-service')).resolves.toEqual([]);
  });

  it('an instance with two checks, one of them critical (or warning), is excluded', async () => {
    await registerRaw(
      ttlService('multi-1', { Check: undefined, Checks: [{ TTL: '60s' }, { TTL: '60s' }] }),
    );
    await registerRaw(ttlService('multi-2'));
    const api = agent.api();
    await api.passTtl('service:multi-2');
    await api.passTtl('service:multi-1:1'); // :2 stays critical

    expect((await api.agentChecks())['service:multi-1:2'].Status).toBe('critical');
    expect((await discovery.discover('multi')).map((i) => i.serviceId)).toEqual(['multi-2']);

    await api.warnTtl('service:multi-1:2');
    expect((await discovery.discover('multi')).map((i) => i.serviceId)).toEqual(['multi-2']);

    await api.passTtl('service:multi-1:2');
    expect((await discovery.discover('multi')).map((i) => i.serviceId)).toEqual([
      'multi-1',
      'multi-2',
    ]);
  });
});

describe('register / deregister', () => {
  it('register() returns true and the agent holds the instance with its check', async () => {
    const registered = await discovery.register({
      name: 'payments',
      serviceId: 'payments-1',
      port: 4101,
      address: '127.0.0.1',
      tags: ['primary'],
      meta: { region: 'eu' },
      healthCheck: { ttl: '30s' },
    });
    cleanups.push(() => agent.api().deregisterService('payments-1'));
    expect(registered).toBe(true);

    const api = agent.api();
    expect((await api.agentServices())['payments-1']).toMatchObject({
      ID: 'payments-1',
      Service: 'payments',
      Address: '127.0.0.1',
      Port: 4101,
      Tags: ['primary'],
      Meta: { region: 'eu' },
    });
    expect((await api.agentChecks())['service:payments-1']).toMatchObject({
      ServiceID: 'payments-1',
      ServiceName: 'payments',
      Type: 'ttl',
    });

    // A TTL service registered through register() is the caller's to pass.
    await api.passTtl('service:payments-1');
    expect(await discovery.discover('payments')).toEqual([
      {
        serviceId: 'payments-1',
        name: 'payments',
        address: '127.0.0.1',
        port: 4101,
        tags: ['primary'],
        meta: { region: 'eu' },
        node: nodeName,
        datacenter: 'dc1',
      },
    ]);
  });

  it('register() without address or check: the agent keeps no address, discover shows the node’s', async () => {
    await expect(
      discovery.register({ name: 'bare', serviceId: 'bare-1', port: 4102 }),
    ).resolves.toBe(true);
    cleanups.push(() => agent.api().deregisterService('bare-1'));

    const held = (await agent.api().agentServices())['bare-1'];
    expect(held).toMatchObject({ ID: 'bare-1', Service: 'bare', Address: '', Port: 4102 });
    const checks = Object.values(await agent.api().agentChecks());
    expect(checks.filter((c) => c.ServiceID === 'bare-1')).toEqual([]);
    expect(await discovery.discover('bare')).toEqual([
      {
        serviceId: 'bare-1',
        name: 'bare',
        address: '127.0.0.1',
        port: 4102,
        tags: [],
        meta: {},
        node: nodeName,
        datacenter: 'dc1',
      },
    ]);
  });

  it('deregister() returns true and the instance is gone; true again for an already-gone id', async () => {
    await registerRaw(ttlService('refunds-1', { Check: { TTL: '60s', Status: 'passing' } }));
    expect((await discovery.discover('refunds')).map((i) => i.serviceId)).toEqual(['refunds-1']);

    await expect(discovery.deregister('refunds-1')).resolves.toBe(true);
    expect(await agent.api().agentServices()).not.toHaveProperty(['refunds-1']);
    expect(await agent.api().agentChecks()).not.toHaveProperty(['service:refunds-1']);
    expect(await discovery.discover('refunds')).toEqual([]);

    await expect(discovery.deregister('refunds-1')).resolves.toBe(true);
    await expect(discovery.deregister('never-registered-1')).resolves.toBe(true);
  });
});
