import 'reflect-metadata';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestingModule } from '@nestjs/testing';
import { filter, firstValueFrom, take, timeout } from 'rxjs';
import {
  CONSUL_CLIENT,
  DISCOVERY_PROVIDER,
  DiscoveryService,
  DiscoveryTimeoutError,
  DiscoveryUnavailableError,
  type ConsulClient,
  type DiscoveryModuleOptions,
  type ServiceDiscoveryProtocol,
} from '../lib/index.js';
import {
  CapturingLogger,
  TestApps,
  httpsRequest,
  makeTestCa,
  startConsulAgent,
  startCountingProxy,
  stopAllAgents,
  waitFor,
  type ConsulAgent,
  type CountingProxy,
  type TestCa,
} from './support/index.js';

// TLS to a real 1.8.7 agent with a CA made by the test: the module works over https (CA as a path
// or as PEM text), refuses a server its CA did not sign with a clear error, and does mTLS when
// the agent has verify_incoming.

const TLS_ERROR = /certificate|self[- ]signed|unable to verify/i;

describe('TLS reliability', () => {
  let dir: string;
  let ca: TestCa;
  let otherCa: TestCa;
  let agent: ConsulAgent; // https, no client certs required
  let mtlsAgent: ConsulAgent; // https with verify_incoming
  const logger = new CapturingLogger();
  const apps = new TestApps(() => logger);

  const tlsOptions = (
    target: ConsulAgent,
    consul: DiscoveryModuleOptions['consul'],
    extra: DiscoveryModuleOptions = {},
  ): DiscoveryModuleOptions => ({
    consul: {
      host: '127.0.0.1',
      port: target.httpsPort,
      secure: true,
      timeoutMs: 4_000,
      ...consul,
    },
    service: { name: 'tls-svc', id: 'tls-svc-1', port: 4200, address: '127.0.0.1' },
    healthCheck: { ttl: '3s', deregisterCriticalServiceAfter: '1m' },
    heartbeat: { intervalRatio: 0.2 },
    retry: { maxAttempts: 2, initialDelayMs: 20, maxDelayMs: 50, failFast: true },
    watch: { waitTime: '5s' },
    shutdownTimeoutMs: 2_000,
    ...extra,
  });

  const compile = (opts: DiscoveryModuleOptions): Promise<TestingModule> => apps.create(opts);

  const closeApp = async (moduleRef: TestingModule): Promise<void> => {
    await apps.close(moduleRef);
    expect(moduleRef.get<ConsulClient>(CONSUL_CLIENT).inflightCount).toBe(0);
  };

  const rejection = async (work: Promise<unknown>): Promise<Error> => {
    const error = await work.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(Error);
    return error as Error;
  };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'athomic-tls-'));
    [ca, otherCa] = await Promise.all([
      makeTestCa(path.join(dir, 'ca')),
      makeTestCa(path.join(dir, 'other-ca')),
    ]);
    const tls = { caFile: ca.caFile, certFile: ca.serverCertFile, keyFile: ca.serverKeyFile };
    [agent, mtlsAgent] = await Promise.all([
      startConsulAgent({ tls }),
      startConsulAgent({ tls: { ...tls, verifyIncoming: true } }),
    ]);
  });

  afterEach(async () => {
    await apps.closeAll();
  });

  afterAll(async () => {
    await stopAllAgents();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it.each([
    ['a CA file path', () => ca.caFile],
    ['CA PEM text', () => readFileSync(ca.caFile, 'utf8')],
  ])('registers, heartbeats, discovers and watches over https with %s', async (_label, caValue) => {
    const moduleRef = await compile(tlsOptions(agent, { ca: caValue() }));
    await moduleRef.init(); // failFast: registration over TLS must have succeeded
    const api = agent.api(); // plain-http raw API for the assertions
    const service = moduleRef.get(DiscoveryService);
    const provider = moduleRef.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);

    expect(
      (await api.healthService('tls-svc', { passing: true })).map((e) => e.Service.ID),
    ).toEqual(['tls-svc-1']);
    expect((await provider.discover('tls-svc')).map((i) => i.serviceId)).toEqual(['tls-svc-1']);

    // Heartbeat over TLS: a check failed behind the module's back comes back passing.
    await api.failTtl('service:tls-svc-1', 'failed by the test');
    expect(await api.healthService('tls-svc', { passing: true })).toEqual([]);
    await waitFor(
      async () => (await api.healthService('tls-svc', { passing: true })).length === 1,
      { timeoutMs: 8_000, message: 'heartbeat over TLS did not restore the check' },
    );

    // Watch over TLS: sees a peer appear and go.
    const sets: string[][] = [];
    const subscription = service
      .watch('tls-peer')
      .subscribe((set) => sets.push(set.map((i) => i.serviceId)));
    try {
      await waitFor(() => service.snapshot('tls-peer'), {
        timeoutMs: 5_000,
        message: 'watch over TLS never produced a first set',
      });
      await api.registerService({
        Name: 'tls-peer',
        ID: 'tls-peer-1',
        Address: '127.0.0.1',
        Port: 4201,
        Check: { TTL: '60s', Status: 'passing' },
      });
      await waitFor(() => service.snapshot('tls-peer')?.length === 1, {
        timeoutMs: 5_000,
        message: 'watch over TLS did not see the new peer',
      });
      expect(await provider.discover('tls-peer')).toEqual(service.snapshot('tls-peer'));
      await api.deregisterService('tls-peer-1');
      await waitFor(() => service.snapshot('tls-peer')?.length === 0, {
        timeoutMs: 5_000,
        message: 'watch over TLS did not see the peer go',
      });
      expect(sets).toEqual([[], ['tls-peer-1'], []]);
    } finally {
      subscription.unsubscribe();
    }

    await closeApp(moduleRef);
    expect(await api.healthService('tls-svc')).toEqual([]);
  });

  it('the traffic is encrypted and every connection closes with the app', async () => {
    // A TCP proxy on 127.0.0.1 in front of the https port: the cert names IP 127.0.0.1, so TLS
    // verifies through it, and the proxy sees bytes but no plaintext HTTP request line.
    const proxy: CountingProxy = await startCountingProxy(agent.httpsPort!);
    try {
      const moduleRef = await compile({
        ...tlsOptions(agent, { ca: ca.caFile, port: proxy.port }),
      });
      await moduleRef.init();
      const provider = moduleRef.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
      const watched = moduleRef.get(DiscoveryService).watch('tls-svc').subscribe();
      for (let i = 0; i < 20; i++) {
        expect((await provider.discover('tls-svc')).map((x) => x.serviceId)).toEqual(['tls-svc-1']);
      }
      expect(proxy.totalConnections).toBeGreaterThan(0);
      expect(proxy.requestLines).toEqual([]);
      watched.unsubscribe();
      await closeApp(moduleRef);
      await waitFor(() => proxy.openConnections === 0, {
        timeoutMs: 3_000,
        message: 'TLS connections stayed open after close',
      });
      expect(await agent.api().healthService('tls-svc')).toEqual([]);
    } finally {
      await proxy.close();
    }
  });

  it('a wrong CA fails with a clear TLS DiscoveryUnavailableError (discover, failFast boot, register)', async () => {
    // Reads: one attempt (plus no retry: a TLS failure is not a reset socket).
    const reader = await compile(
      tlsOptions(agent, { ca: otherCa.caFile }, { autoRegister: false }),
    );
    await reader.init();
    const provider = reader.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
    const readError = await rejection(provider.discover('tls-svc'));
    expect(readError).toBeInstanceOf(DiscoveryUnavailableError);
    expect(readError).not.toBeInstanceOf(DiscoveryTimeoutError);
    expect(readError.message).toMatch(TLS_ERROR);
    expect(readError.message).toContain(`https://127.0.0.1:${agent.httpsPort}`);
    expect(await provider.register({ name: 'tls-svc', serviceId: 'tls-svc-2', port: 4202 })).toBe(
      false,
    );
    const logged = logger.lines().filter((line) => line.includes('tls-svc-2'));
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatch(TLS_ERROR);

    // failFast boot rejects with the last cause.
    const booting = await compile(tlsOptions(agent, { ca: otherCa.caFile }));
    const bootError = await rejection(booting.init());
    expect(bootError).toBeInstanceOf(DiscoveryUnavailableError);
    expect(bootError.message).toMatch(TLS_ERROR);

    // The default trust store does not know our CA either: no ca → the same clear failure.
    const noCa = await compile(tlsOptions(agent, {}, { autoRegister: false }));
    await noCa.init();
    const noCaError = await rejection(
      noCa.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER).discover('tls-svc'),
    );
    expect(noCaError).toBeInstanceOf(DiscoveryUnavailableError);
    expect(noCaError.message).toMatch(TLS_ERROR);

    expect(Object.keys(await agent.api().agentServices())).toEqual([]);
  });

  it('verify_incoming: works with the client cert + key (path and PEM text)', async () => {
    // Sanity: the agent really refuses a client without a certificate.
    await expect(
      httpsRequest(`${mtlsAgent.httpsBaseUrl}/v1/status/leader`, { caFile: ca.caFile }),
    ).rejects.toThrow();
    for (const [cert, key] of [
      [ca.clientCertFile, ca.clientKeyFile],
      [readFileSync(ca.clientCertFile, 'utf8'), readFileSync(ca.clientKeyFile, 'utf8')],
    ]) {
      const moduleRef = await compile(tlsOptions(mtlsAgent, { ca: ca.caFile, cert, key }));
      await moduleRef.init();
      const api = mtlsAgent.api();
      expect(
        (await api.healthService('tls-svc', { passing: true })).map((e) => e.Service.ID),
      ).toEqual(['tls-svc-1']);
      const service = moduleRef.get(DiscoveryService);
      const set = await firstValueFrom(
        service.watch('tls-svc').pipe(
          filter((s) => s.length === 1),
          take(1),
          timeout(5_000),
        ),
      );
      expect(set.map((i) => i.serviceId)).toEqual(['tls-svc-1']);
      await closeApp(moduleRef);
      expect(await api.healthService('tls-svc')).toEqual([]);
    }
  });

  it('verify_incoming: fails clearly without a client certificate', async () => {
    const reader = await compile(tlsOptions(mtlsAgent, { ca: ca.caFile }, { autoRegister: false }));
    await reader.init();
    const provider = reader.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER);
    const readError = await rejection(provider.discover('tls-svc'));
    expect(readError).toBeInstanceOf(DiscoveryUnavailableError);
    expect(readError).not.toBeInstanceOf(DiscoveryTimeoutError);
    expect(readError.message).toMatch(/certificate/i);

    const booting = await compile(tlsOptions(mtlsAgent, { ca: ca.caFile }));
    const bootError = await rejection(booting.init());
    expect(bootError).toBeInstanceOf(DiscoveryUnavailableError);
    expect(bootError.message).toMatch(/certificate/i);

    // A client cert from another CA is refused as well.
    const foreign = await compile(
      tlsOptions(
        mtlsAgent,
        { ca: ca.caFile, cert: otherCa.clientCertFile, key: otherCa.clientKeyFile },
        { autoRegister: false },
      ),
    );
    await foreign.init();
    const foreignError = await rejection(
      foreign.get<ServiceDiscoveryProtocol>(DISCOVERY_PROVIDER).discover('tls-svc'),
    );
    expect(foreignError).toBeInstanceOf(DiscoveryUnavailableError);
    expect(foreignError.message).toMatch(/certificate/i);
    expect(Object.keys(await mtlsAgent.api().agentServices())).toEqual([]);
  });
});
