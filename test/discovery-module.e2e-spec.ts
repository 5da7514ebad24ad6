import 'reflect-metadata';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Inject, Injectable, Module, type INestApplicationContext } from '@nestjs/common';
import { ConfigModule, ConfigService } from '@nestjs/config';
import { NestFactory } from '@nestjs/core';
import { Test } from '@nestjs/testing';
import {
  DISCOVERY_PROVIDER,
  DISCOVERY_SETTINGS,
  DiscoveryModule,
  DiscoveryService,
  DiscoverySettings,
  type DiscoveryModuleOptions,
  type DiscoveryOptionsFactory,
  type ServiceDiscoveryProtocol,
  type ServiceInstance,
} from '../lib/index.js';
import {
  persistedCheck,
  startConsulAgent,
  stopAllAgents,
  type ConsulAgent,
} from './support/index.js';

// DiscoveryModule wiring (forRoot / forRootAsync / isGlobal), what the agent holds after init,
// and what it no longer holds after close — all against one real Consul dev agent.

let agent: ConsulAgent;
let dataDir: string;
let nodeName: string;

/** A consumer: gets the protocol by token, through constructor DI. */
@Injectable()
class ShardingService {
  constructor(@Inject(DISCOVERY_PROVIDER) private readonly discovery: ServiceDiscoveryProtocol) {}

  peers(name: string): Promise<ServiceInstance[]> {
    return this.discovery.discover(name);
  }
}

/** A feature module that does NOT import DiscoveryModule. */
@Module({ providers: [ShardingService], exports: [ShardingService] })
class ShardingModule {}

/** Small, fast settings for one self-registration against the test agent. */
function options(
  service: NonNullable<DiscoveryModuleOptions['service']>,
  extra: Omit<DiscoveryModuleOptions, 'service'> = {},
): DiscoveryModuleOptions {
  return {
    consul: { host: '127.0.0.1', port: agent.httpPort, timeoutMs: 1000 },
    service: { address: '127.0.0.1', ...service },
    retry: { maxAttempts: 2, initialDelayMs: 20, maxDelayMs: 100 },
    ...extra,
  };
}

@Injectable()
class ClassDiscoveryConfig implements DiscoveryOptionsFactory {
  async createDiscoveryOptions(): Promise<DiscoveryModuleOptions> {
    await Promise.resolve(); // a factory may be async
    return options({ name: 'by-class', id: 'by-class-1', port: 3103 });
  }
}

@Injectable()
class ExistingDiscoveryConfig implements DiscoveryOptionsFactory {
  calls = 0;

  createDiscoveryOptions(): DiscoveryModuleOptions {
    this.calls++;
    return options({ name: 'by-existing', id: 'by-existing-1', port: 3104 });
  }
}

@Module({ providers: [ExistingDiscoveryConfig], exports: [ExistingDiscoveryConfig] })
class DiscoveryConfigModule {}

const open = new Set<INestApplicationContext>();

function track<T extends INestApplicationContext>(app: T): T {
  open.add(app);
  return app;
}

async function closeApp(app: INestApplicationContext): Promise<void> {
  open.delete(app);
  await app.close();
}

/** Asserts, without waiting, that the agent holds `id` and lists it as passing. */
async function expectRegisteredNow(name: string, id: string, port: number): Promise<void> {
  expect(await agent.api().passingIds(name)).toEqual([id]);
  const services = await agent.api().agentServices();
  expect(services[id]).toMatchObject({ ID: id, Service: name, Address: '127.0.0.1', Port: port });
  const checks = await agent.api().agentChecks();
  expect(checks[`service:${id}`]).toMatchObject({
    ServiceID: id,
    ServiceName: name,
    Type: 'ttl',
    Status: 'passing',
  });
}

async function expectGone(name: string, id: string): Promise<void> {
  expect(await agent.api().agentServices()).not.toHaveProperty([id]);
  expect(await agent.api().agentChecks()).not.toHaveProperty([`service:${id}`]);
  expect(await agent.api().healthService(name)).toEqual([]);
}

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'discovery-module-e2e-'));
  // -data-dir in dev mode makes the agent persist check definitions, which 1.8.7's API hides.
  agent = await startConsulAgent({ extraArgs: ['-data-dir', dataDir] });
  const self = (await agent.api().request('GET', '/v1/agent/self')).json as {
    Config: { NodeName: string };
  };
  nodeName = self.Config.NodeName;
});

afterEach(async () => {
  await Promise.all([...open].map((app) => closeApp(app)));
});

afterAll(async () => {
  await stopAllAgents();
  await rm(dataDir, { recursive: true, force: true });
});

describe('DiscoveryModule.forRoot', () => {
  it('after init the agent holds name, id, address, port, tags, meta and a passing TTL check; ?passing lists it at once; close removes it', async () => {
    const tags = ['blue', 'v1'];
    const meta = { zone: 'a', version: '1.2.3' };
    const moduleRef = await Test.createTestingModule({
      imports: [
        DiscoveryModule.forRoot(
          options(
            { name: 'orders', id: 'orders-1', port: 3101, tags, meta },
            { healthCheck: { ttl: '2s', deregisterCriticalServiceAfter: '1m' } },
          ),
        ),
      ],
    }).compile();
    const app = track(moduleRef.createNestApplication({ logger: false }));
    expect(await agent.api().agentServices()).not.toHaveProperty(['orders-1']);

    await app.init();

    // No waiting: the instance must be passing the moment init resolves.
    expect(await agent.api().passingIds('orders')).toEqual(['orders-1']);
    const services = await agent.api().agentServices();
    expect(services['orders-1']).toMatchObject({
      ID: 'orders-1',
      Service: 'orders',
      Address: '127.0.0.1',
      Port: 3101,
      Tags: tags,
      Meta: meta,
    });
    const checks = await agent.api().agentChecks();
    expect(checks['service:orders-1']).toMatchObject({
      CheckID: 'service:orders-1',
      ServiceID: 'orders-1',
      ServiceName: 'orders',
      Type: 'ttl',
      Status: 'passing',
    });
    expect(await persistedCheck(dataDir, 'service:orders-1')).toMatchObject({
      TTL: 2e9,
      DeregisterCriticalServiceAfter: 60e9,
    });

    await closeApp(app);
    await expectGone('orders', 'orders-1');
  });

  it('a ShardingService gets DISCOVERY_PROVIDER by constructor DI and discovers the registered instance; DiscoveryService.self equals the registration', async () => {
    const tags = ['shard'];
    const meta = { shards: '0-15' };
    const moduleRef = await Test.createTestingModule({
      imports: [
        DiscoveryModule.forRoot(
          options(
            { name: 'sharder', id: 'sharder-7', port: 3102, tags, meta },
            { healthCheck: { ttl: '2s' } },
          ),
        ),
      ],
      providers: [ShardingService],
    }).compile();
    const app = track(moduleRef.createNestApplication({ logger: false }));
    await app.init();

    const peers = await app.get(ShardingService).peers('sharder');
    expect(peers).toEqual([
      {
        serviceId: 'sharder-7',
        name: 'sharder',
        address: '127.0.0.1',
        port: 3102,
        tags,
        meta,
        node: nodeName,
        datacenter: 'dc1',
      },
    ]);
    expect(app.get(DiscoveryService).self).toEqual({
      name: 'sharder',
      serviceId: 'sharder-7',
      port: 3102,
      address: '127.0.0.1',
      tags,
      meta,
      healthCheck: { ttl: '2s' },
    });
    // DISCOVERY_PROVIDER and the class token resolve to the same discovery.
    expect(await app.get(DiscoveryService).discover('sharder')).toEqual(peers);
  });

  it('isGlobal: a feature module that does not import DiscoveryModule still injects DISCOVERY_PROVIDER', async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [
        DiscoveryModule.forRoot({
          ...options({ name: 'global-svc', id: 'global-svc-1', port: 3105 }),
          isGlobal: true,
        }),
        ShardingModule,
      ],
    }).compile();
    const app = track(moduleRef.createNestApplication({ logger: false }));
    await app.init();

    await expectRegisteredNow('global-svc', 'global-svc-1', 3105);
    const peers = await app.get(ShardingService).peers('global-svc');
    expect(peers.map((p) => p.serviceId)).toEqual(['global-svc-1']);

    await closeApp(app);
    await expectGone('global-svc', 'global-svc-1');
  });

  it('without isGlobal the same feature module cannot resolve DISCOVERY_PROVIDER (control)', async () => {
    const builder = Test.createTestingModule({
      imports: [
        DiscoveryModule.forRoot(options({ name: 'local-svc', id: 'local-svc-1', port: 3106 })),
        ShardingModule,
      ],
    });
    await expect(builder.compile()).rejects.toThrow(/ShardingService/);
    expect(await agent.api().agentServices()).not.toHaveProperty(['local-svc-1']);
  });
});

describe('DiscoveryModule.forRootAsync', () => {
  it('useFactory + ConfigService: boots, registers, and DISCOVERY_SETTINGS are the validated, defaulted settings (consul address from CONSUL_HTTP_ADDR)', async () => {
    const saved = process.env.CONSUL_HTTP_ADDR;
    process.env.CONSUL_HTTP_ADDR = agent.httpAddr;
    try {
      const moduleRef = await Test.createTestingModule({
        imports: [
          ConfigModule.forRoot({
            ignoreEnvFile: true,
            load: [
              () => ({
                discovery: { service: { name: 'billing', address: '127.0.0.1', port: 3107 } },
              }),
            ],
          }),
          DiscoveryModule.forRootAsync({
            imports: [ConfigModule],
            inject: [ConfigService],
            useFactory: (config: ConfigService) =>
              config.getOrThrow<DiscoveryModuleOptions>('discovery'),
          }),
        ],
      }).compile();
      const app = track(moduleRef.createNestApplication({ logger: false }));
      await app.init();

      const id = `billing-${os.hostname()}-3107`;
      const settings = app.get<DiscoverySettings>(DISCOVERY_SETTINGS);
      expect(settings).toBeInstanceOf(DiscoverySettings);
      expect(settings).toMatchObject({
        enabled: true,
        autoRegister: true,
        consul: {
          host: '127.0.0.1',
          port: agent.httpPort,
          secure: false,
          timeoutMs: 5000,
          maxSockets: 32,
        },
        service: {
          name: 'billing',
          id,
          address: '127.0.0.1',
          port: 3107,
          tags: [],
          meta: {},
        },
        heartbeat: { intervalRatio: 1 / 3 },
        retry: { maxAttempts: 6, initialDelayMs: 200, maxDelayMs: 5000, failFast: false },
        shutdownTimeoutMs: 3000,
        watch: {
          waitTime: '60s',
          consistency: 'default',
          rateLimit: { perSecond: 20, burst: 10 },
          maxLongPolls: 64,
          services: [],
        },
      });
      expect({ ...settings.healthCheck }).toEqual({
        ttl: '10s',
        deregisterCriticalServiceAfter: '1m',
      });

      // What reached Consul is what those settings say.
      await expectRegisteredNow('billing', id, 3107);
      expect(await persistedCheck(dataDir, `service:${id}`)).toMatchObject({
        TTL: 10e9,
        DeregisterCriticalServiceAfter: 60e9,
      });

      await closeApp(app);
      await expectGone('billing', id);
    } finally {
      if (saved === undefined) delete process.env.CONSUL_HTTP_ADDR;
      else process.env.CONSUL_HTTP_ADDR = saved;
    }
  });

  it('useClass: a DiscoveryOptionsFactory class (async) boots and registers', async () => {
    const app = track(
      await NestFactory.createApplicationContext(
        DiscoveryModule.forRootAsync({ useClass: ClassDiscoveryConfig }),
        { logger: false },
      ),
    );
    await app.init();
    await expectRegisteredNow('by-class', 'by-class-1', 3103);
    expect(app.get<DiscoverySettings>(DISCOVERY_SETTINGS).retry).toMatchObject({
      maxAttempts: 2,
      initialDelayMs: 20,
      maxDelayMs: 100,
    });

    await closeApp(app);
    await expectGone('by-class', 'by-class-1');
  });

  it('useExisting: the factory provided by an imported module is used as is', async () => {
    @Module({
      imports: [
        DiscoveryModule.forRootAsync({
          imports: [DiscoveryConfigModule],
          useExisting: ExistingDiscoveryConfig,
        }),
        DiscoveryConfigModule,
      ],
    })
    class AppModule {}

    const app = track(await NestFactory.createApplicationContext(AppModule, { logger: false }));
    await app.init();
    await expectRegisteredNow('by-existing', 'by-existing-1', 3104);
    // The one instance from DiscoveryConfigModule was asked, once: no second instance was made.
    expect(app.get(ExistingDiscoveryConfig).calls).toBe(1);

    await closeApp(app);
    await expectGone('by-existing', 'by-existing-1');
  });

  it('isGlobal with useFactory: a feature module without the import injects DISCOVERY_PROVIDER', async () => {
    @Module({
      imports: [
        DiscoveryModule.forRootAsync({
          isGlobal: true,
          useFactory: () => options({ name: 'global-async', id: 'global-async-1', port: 3108 }),
        }),
        ShardingModule,
      ],
    })
    class AppModule {}

    const app = track(await NestFactory.createApplicationContext(AppModule, { logger: false }));
    await app.init();
    await expectRegisteredNow('global-async', 'global-async-1', 3108);
    const peers = await app.get(ShardingService).peers('global-async');
    expect(peers.map((p) => p.serviceId)).toEqual(['global-async-1']);

    await closeApp(app);
    await expectGone('global-async', 'global-async-1');
  });
});

describe('Consul env conventions', () => {
  const keys = ['CONSUL_HTTP_ADDR', 'CONSUL_HTTP_SSL'] as const;
  let saved: Partial<Record<(typeof keys)[number], string>>;

  beforeEach(() => {
    saved = {};
    for (const key of keys) saved[key] = process.env[key];
  });

  afterEach(() => {
    for (const key of keys) {
      if (saved[key] === undefined) delete process.env[key];
      else process.env[key] = saved[key];
    }
  });

  it('explicit consul.host/port win over CONSUL_HTTP_ADDR (which here names a dead port)', async () => {
    process.env.CONSUL_HTTP_ADDR = '127.0.0.1:1';
    const app = track(
      await NestFactory.createApplicationContext(
        DiscoveryModule.forRoot(options({ name: 'explicit', id: 'explicit-1', port: 3111 })),
        { logger: false },
      ),
    );
    await app.init();
    expect(app.get<DiscoverySettings>(DISCOVERY_SETTINGS).consul).toMatchObject({
      host: '127.0.0.1',
      port: agent.httpPort,
    });
    await expectRegisteredNow('explicit', 'explicit-1', 3111);
  });

  it('an https:// CONSUL_HTTP_ADDR makes the connection secure', async () => {
    process.env.CONSUL_HTTP_ADDR = 'https://127.0.0.1:8501';
    delete process.env.CONSUL_HTTP_SSL;
    const app = track(
      await NestFactory.createApplicationContext(DiscoveryModule.forRoot({ enabled: false }), {
        logger: false,
      }),
    );
    expect(app.get<DiscoverySettings>(DISCOVERY_SETTINGS).consul).toMatchObject({
      host: '127.0.0.1',
      port: 8501,
      secure: true,
    });
  });
});

describe('enabled / autoRegister', () => {
  it('enabled: false registers nothing, yet DISCOVERY_PROVIDER is injectable and discover works', async () => {
    await agent.api().registerService({
      Name: 'inventory',
      ID: 'inventory-1',
      Address: '127.0.0.1',
      Port: 4001,
      Check: { TTL: '30s', Status: 'passing' },
    });
    try {
      const moduleRef = await Test.createTestingModule({
        imports: [
          DiscoveryModule.forRoot({
            ...options({ name: 'disabled-svc', id: 'disabled-svc-1', port: 3109 }),
            enabled: false,
            isGlobal: true,
          }),
          ShardingModule,
        ],
      }).compile();
      const app = track(moduleRef.createNestApplication({ logger: false }));
      await app.init();

      expect(await agent.api().agentServices()).not.toHaveProperty(['disabled-svc-1']);
      expect(await agent.api().healthService('disabled-svc')).toEqual([]);
      const peers = await app.get(ShardingService).peers('inventory');
      expect(peers).toEqual([
        {
          serviceId: 'inventory-1',
          name: 'inventory',
          address: '127.0.0.1',
          port: 4001,
          tags: [],
          meta: {},
          node: nodeName,
          datacenter: 'dc1',
        },
      ]);

      await closeApp(app);
      expect(await agent.api().agentServices()).not.toHaveProperty(['disabled-svc-1']);
    } finally {
      await agent.api().deregisterService('inventory-1');
    }
  });

  it('enabled: false needs no service name or port', async () => {
    const app = track(
      await NestFactory.createApplicationContext(
        DiscoveryModule.forRoot({
          enabled: false,
          consul: { host: '127.0.0.1', port: agent.httpPort, timeoutMs: 1000 },
        }),
        { logger: false },
      ),
    );
    await app.init();
    expect(await app.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER).discover('nobody')).toEqual(
      [],
    );
  });

  it('autoRegister: false registers nothing at boot; registerSelf() registers (passing at once); close deregisters', async () => {
    const app = track(
      await NestFactory.createApplicationContext(
        DiscoveryModule.forRoot({
          ...options({ name: 'manual', id: 'manual-1', port: 3110, tags: ['m'] }),
          autoRegister: false,
        }),
        { logger: false },
      ),
    );
    await app.init();
    expect(await agent.api().agentServices()).not.toHaveProperty(['manual-1']);
    expect(await agent.api().healthService('manual')).toEqual([]);

    await expect(app.get(DiscoveryService).registerSelf()).resolves.toBe(true);
    await expectRegisteredNow('manual', 'manual-1', 3110);
    expect((await agent.api().agentServices())['manual-1'].Tags).toEqual(['m']);

    await closeApp(app);
    await expectGone('manual', 'manual-1');
  });
});
