import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import {
  httpsRequest,
  makeTestCa,
  startConsulAgent,
  startCountingProxy,
  stopAllAgents,
  waitFor,
  type ConsulAgent,
  type TestCa,
} from './index.js';

// Proves the real-Consul harness itself; the library under test is not involved.
describe('test/support: real Consul agents', () => {
  afterAll(stopAllAgents);

  describe('dev agent', () => {
    let agent: ConsulAgent;
    beforeAll(async () => {
      agent = await startConsulAgent();
    });

    it('registers through the raw API and loses everything on a restart on the same ports', async () => {
      const api = agent.api();
      await api.registerService({
        Name: 'harness-svc',
        ID: 'harness-svc-1',
        Address: '127.0.0.1',
        Port: 4000,
        Check: { TTL: '10s', Status: 'passing' },
      });
      expect(Object.keys(await api.agentServices())).toEqual(['harness-svc-1']);
      const passing = await api.healthService('harness-svc', { passing: true });
      expect(passing.map((e) => e.Service.ID)).toEqual(['harness-svc-1']);

      await api.failTtl('service:harness-svc-1', 'down');
      expect((await api.agentChecks())['service:harness-svc-1'].Status).toBe('critical');
      expect(await api.healthService('harness-svc', { passing: true })).toEqual([]);

      const { httpPort, serverPort, pid } = agent;
      await agent.restart();
      expect([agent.httpPort, agent.serverPort]).toEqual([httpPort, serverPort]);
      expect(agent.pid).not.toBe(pid);
      expect(await api.agentServices()).toEqual({});
      // 1.8.7 answers a pass for a check it no longer has with 500 (newer Consul: 404).
      const pass = await api.request('PUT', '/v1/agent/check/pass/service:harness-svc-1');
      expect([404, 500]).toContain(pass.status);
    });

    it('stop() ends the process; start() brings it back on the same port', async () => {
      await agent.stop();
      expect(agent.pid).toBeUndefined();
      await expect(fetch(`${agent.baseUrl}/v1/status/leader`)).rejects.toThrow();
      await agent.start();
      const leader = await (await fetch(`${agent.baseUrl}/v1/status/leader`)).json();
      expect(leader).toBe(`127.0.0.1:${agent.serverPort}`);
    });

    it('a counting proxy sees connections, request lines and can delay answers', async () => {
      const proxy = await startCountingProxy(agent.httpPort);
      try {
        const get = (p: string) =>
          new Promise<number>((resolve, reject) => {
            // agent: false gives one fresh connection per request, so counts are exact.
            http
              .get(`${proxy.baseUrl}${p}`, { agent: false }, (res) => {
                res.resume();
                res.on('end', () => resolve(res.statusCode ?? 0));
              })
              .on('error', reject);
          });
        expect(await get('/v1/status/leader')).toBe(200);
        expect(await get('/v1/health/service/none?index=1&wait=1ms')).toBe(200);
        expect(proxy.totalConnections).toBe(2);
        expect(proxy.requests('index=')).toEqual([
          'GET /v1/health/service/none?index=1&wait=1ms HTTP/1.1',
        ]);
        await waitFor(() => proxy.openConnections === 0, {
          timeoutMs: 2_000,
          message: 'proxy connections should close',
        });

        proxy.delayMs = 300;
        const started = Date.now();
        expect(await get('/v1/status/leader')).toBe(200);
        expect(Date.now() - started).toBeGreaterThanOrEqual(290);
      } finally {
        await proxy.close();
      }
    });
  });

  it('ACL agent: 403 without a token, 200 with the master token or a created token', async () => {
    const masterToken = randomUUID();
    const agent = await startConsulAgent({ acl: { masterToken } });
    const body = { Name: 'acl-svc', ID: 'acl-svc-1', Port: 4001 };

    const anonymous = await agent.api('').request('PUT', '/v1/agent/service/register', body);
    expect(anonymous.status).toBe(403);
    expect(anonymous.text).toMatch(/Permission denied/);

    const token = await agent
      .api()
      .createAclToken(masterToken, 'service "acl-svc" { policy = "write" }');
    const withToken = await agent.api(token).request('PUT', '/v1/agent/service/register', body);
    expect(withToken.status).toBe(200);
    expect(Object.keys(await agent.api().agentServices())).toEqual(['acl-svc-1']);
    // Reads without a token are filtered, not refused.
    expect(await agent.api('').healthService('acl-svc')).toEqual([]);
    await agent.kill();
  });

  describe('TLS agent', () => {
    let dir: string;
    let ca: TestCa;
    beforeAll(async () => {
      dir = await mkdtemp(path.join(os.tmpdir(), 'athomic-ca-'));
      ca = await makeTestCa(dir);
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('answers over https when the client trusts the CA', async () => {
      const agent = await startConsulAgent({
        tls: { caFile: ca.caFile, certFile: ca.serverCertFile, keyFile: ca.serverKeyFile },
      });
      const res = await httpsRequest(`${agent.httpsBaseUrl}/v1/status/leader`, {
        caFile: ca.caFile,
      });
      expect(res.status).toBe(200);
      expect(res.json).toBe(`127.0.0.1:${agent.serverPort}`);
      await agent.kill();
    });

    it('with verifyIncoming, refuses a client without a certificate (mTLS)', async () => {
      const agent = await startConsulAgent({
        tls: {
          caFile: ca.caFile,
          certFile: ca.serverCertFile,
          keyFile: ca.serverKeyFile,
          verifyIncoming: true,
        },
      });
      const url = `${agent.httpsBaseUrl}/v1/agent/self`;
      await expect(httpsRequest(url, { caFile: ca.caFile })).rejects.toThrow();
      const res = await httpsRequest(url, {
        caFile: ca.caFile,
        certFile: ca.clientCertFile,
        keyFile: ca.clientKeyFile,
      });
      expect(res.status).toBe(200);
      await agent.kill();
    });
  });

  it('waitFor gives up at its deadline with the message and the last value', async () => {
    const started = Date.now();
    await expect(waitFor(() => false, { timeoutMs: 200, message: 'never true' })).rejects.toThrow(
      /never true \(timed out after 200 ms; last value: false\)/,
    );
    expect(Date.now() - started).toBeLessThan(1_000);
  });
});
