import 'reflect-metadata';
import { DiscoveryModule, type DiscoveryModuleOptions } from '@athomic/discovery';
import {
  AppHarness,
  FAST_RETRY,
  startConsulAgent,
  stopAllAgents,
  waitFor,
  type ConsulAgent,
} from '../support/index.js';
import { discoveryOptions, InvoiceWorker } from './invoicing-worker.module.js';

// The README's worker recipe on a real agent: its settings (only the agent, the loopback address
// and faster retries added) boot, the instance is passing in Consul, every partition is worked on
// with a fencing token, and app.close() drains the handlers and deregisters.
describe('README recipe: a worker with a TTL check', () => {
  const apps = new AppHarness<DiscoveryModuleOptions>(DiscoveryModule);
  let agent: ConsulAgent;

  beforeAll(async () => {
    agent = await startConsulAgent();
  });
  afterEach(() => apps.closeAll());
  afterAll(stopAllAgents);

  it('registers, owns all 64 partitions with tokens, and leaves cleanly', async () => {
    const options: DiscoveryModuleOptions = {
      ...discoveryOptions,
      consul: { host: '127.0.0.1', port: agent.httpPort },
      service: { ...discoveryOptions.service, id: 'invoicer-1', address: '127.0.0.1' },
      retry: { ...FAST_RETRY, failFast: true },
    };
    const app = await apps.compile({
      imports: [DiscoveryModule.forRoot(options)],
      providers: [InvoiceWorker],
    });
    await apps.init(app);
    const worker = app.get(InvoiceWorker);

    expect(await agent.api().passingIds('invoicer')).toEqual(['invoicer-1']);
    await waitFor(() => worker.running.size === 64, {
      timeoutMs: 10_000,
      message: 'the worker runs a handler on each of the 64 partitions',
    });
    expect([...worker.running.values()].every((token) => typeof token === 'number')).toBe(true);

    await apps.close(app);
    expect(worker.running.size).toBe(0);
    expect(Object.keys(await agent.api().agentServices())).not.toContain('invoicer-1');
  });
});
