import { Inject, Injectable } from '@nestjs/common';
import { ScheduleModule } from '@nestjs/schedule';
import type { TestingModule } from '@nestjs/testing';
import {
  DiscoveryModule,
  DiscoverySettingsError,
  ShardingService,
  type DiscoveryModuleOptions,
} from '../lib/index.js';
import {
  ClusterCron,
  ClusterScheduleModule,
  ClusterScheduler,
  type JobFire,
} from '../lib/schedule/index.js';
import {
  FAST_RETRY,
  startConsulAgent,
  startCountingProxy,
  stopAllAgents,
  TestApps,
  waitFor,
  type ConsulAgent,
  type CountingProxy,
} from './support/index.js';

// @ClusterCron on a real agent, two in-process apps: a 1-second job runs once per instant across
// them (each run's app, instant and token recorded by the job itself), the record in Consul says
// what was claimed; the owner leaves and the other app goes on with a higher token. Bad input
// fails app init with the field named, before any request reaches the agent.

interface Run {
  app: string;
  at: number;
  token: number;
  late: boolean;
  /** `Date.now()` when the handler began and when it returned (`Exporter` records them). */
  began?: number;
  ended?: number;
}

const RUNS = Symbol('RUNS');

@Injectable()
class Ticker {
  constructor(@Inject(RUNS) private readonly runs: { app: string; list: Run[] }) {}

  @ClusterCron('* * * * * *', { name: 'tick' })
  tick(fire: JobFire): void {
    const { app, list } = this.runs;
    list.push({ app, at: fire.scheduledAt.getTime(), token: fire.token, late: fire.late });
  }
}

@Injectable()
class Exporter {
  constructor(@Inject(RUNS) private readonly runs: { app: string; list: Run[] }) {}

  /**
   * Once a year (only fire() fires it). An on-time run lasts until its signal aborts, then takes
   * 300 ms to wind down (well within `drainTimeoutMs`): its partition is not released before.
   */
  @ClusterCron('0 0 0 1 1 *', { name: 'export', delivery: 'at-least-once' })
  async export(fire: JobFire): Promise<void> {
    const { app, list } = this.runs;
    const run: Run = {
      app,
      at: fire.scheduledAt.getTime(),
      token: fire.token,
      late: fire.late,
      began: Date.now(),
    };
    list.push(run);
    if (!fire.late) {
      await new Promise((resolve) =>
        fire.signal.addEventListener('abort', resolve, { once: true }),
      );
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    run.ended = Date.now();
  }
}

@Injectable()
class BadExpression {
  @ClusterCron('61 * * * * *', { name: 'bad' })
  bad(): void {}
}

describe('@ClusterCron on a real agent', () => {
  const apps = new TestApps();
  let agent: ConsulAgent;
  let proxy: CountingProxy;
  const runs: Run[] = [];

  const options = (
    id: string,
    mode: 'exclusive' | 'cooperative' = 'exclusive',
  ): DiscoveryModuleOptions => ({
    consul: { host: '127.0.0.1', port: proxy.port, timeoutMs: 2_000 },
    service: { name: 'jobs', id, address: '127.0.0.1', port: 4600 },
    healthCheck: { ttl: '3s' },
    retry: { ...FAST_RETRY, failFast: true },
    shutdownTimeoutMs: 3_000,
    sharding: {
      partitions: 8,
      mode,
      settleMs: 50,
      drainTimeoutMs: 1_000,
      lock: { lockDelay: '1s' },
    },
  });

  const compile = (
    id: string,
    providers: unknown[],
    mode?: 'exclusive' | 'cooperative',
  ): Promise<TestingModule> =>
    apps.compile({
      imports: [
        DiscoveryModule.forRoot(options(id, mode)),
        ScheduleModule.forRoot(),
        ClusterScheduleModule.forRoot(),
      ],
      providers: [{ provide: RUNS, useValue: { app: id, list: runs } }, ...(providers as never[])],
    });

  beforeAll(async () => {
    agent = await startConsulAgent();
    proxy = await startCountingProxy(agent.httpPort);
  });
  afterEach(() => apps.closeAll());
  afterAll(async () => {
    await proxy.close();
    await stopAllAgents();
  });

  it('two apps: one run per instant across them; after the owner leaves, the other goes on with a higher token', async () => {
    const a = await apps.init(await compile('jobs-a', [Ticker]));
    const b = await apps.init(await compile('jobs-b', [Ticker]));
    const partition = a.get(ShardingService).partitionOf('job:tick');
    const owner = await waitFor(
      () => [a, b].find((app) => app.get(ClusterScheduler).running().includes('tick')),
      { timeoutMs: 10_000, message: 'one app runs tick' },
    );
    const other = owner === a ? b : a;
    await waitFor(() => runs.length >= 5, { timeoutMs: 15_000, message: '5 runs' });
    const firstToken = owner.get(ShardingService).token(partition)!;
    expect(other.get(ClusterScheduler).running()).toEqual([]);

    // Consul holds the claim: the latest instant, the owner's token.
    const record = await waitFor(
      async () => {
        const res = await agent.api().request('GET', '/v1/kv/athomic/jobs/jobs/tick?raw');
        return res.status === 200
          ? (res.json as { last: string; token: number; state: string })
          : undefined;
      },
      { timeoutMs: 5_000, message: 'the record' },
    );
    expect(record.token).toBe(firstToken);
    expect(runs.map((r) => r.at)).toContain(Date.parse(record.last));

    // The owner leaves (planned): the other takes the partition and goes on.
    const before = runs.length;
    await apps.close(owner);
    await waitFor(
      () => runs.slice(before).filter((r) => r.app === other.get(RUNS).app).length >= 3,
      {
        timeoutMs: 20_000,
        message: 'the other app runs tick',
      },
    );
    const later = runs.filter((r) => r.app !== owner.get<symbol, { app: string }>(RUNS).app);
    expect(Math.min(...later.map((r) => r.token))).toBeGreaterThan(firstToken);

    // Never two runs of one instant; the runs of each app are consecutive in time.
    const instants = runs.map((r) => r.at);
    expect(new Set(instants).size).toBe(instants.length);
    expect([...instants].sort((x, y) => x - y)).toEqual(instants);
    process.stdout.write(
      `\n[schedule e2e] ${runs.length} runs, ${runs.filter((r) => r.late).length} late; tokens ${[...new Set(runs.map((r) => r.token))].join(' → ')}\n`,
    );
  }, 60_000);

  it("at-least-once: a run aborted by its owner's shutdown stays claimed, not done: the next owner runs it again, late, with a higher token", async () => {
    runs.length = 0;
    const a = await apps.init(await compile('jobs-a', [Exporter]));
    const b = await apps.init(await compile('jobs-b', [Exporter]));
    const owner = await waitFor(
      () => [a, b].find((app) => app.get(ClusterScheduler).running().includes('export')),
      { timeoutMs: 10_000, message: 'one app runs export' },
    );
    const other = owner === a ? b : a;
    const names = (app: TestingModule) => app.get<symbol, { app: string }>(RUNS).app;
    const t = new Date('2021-01-01T00:00:00.000Z');
    const first = owner.get(ClusterScheduler).fire('export', t);
    await waitFor(() => runs.length === 1, { timeoutMs: 5_000, message: 'the first run' });

    // The owner shuts down mid-run: the run ends on its signal, while the lock is still held
    // (the partition's release waits for it), so marking it done would still commit.
    await apps.close(owner);
    await first;
    const again = await waitFor(() => runs.find((r) => r.app === names(other)), {
      timeoutMs: 10_000,
      message: 'the other app runs the aborted instant again',
    });
    expect(runs[0]).toMatchObject({ app: names(owner), at: t.getTime(), late: false });
    expect(again).toMatchObject({ at: t.getTime(), late: true });
    expect(again.token).toBeGreaterThan(runs[0].token);
    // No overlap: the next owner began after the aborted run ended (its drain held the lock).
    expect(again.began).toBeGreaterThanOrEqual(runs[0].ended!);
    const record = await waitFor(
      async () => {
        const res = await agent.api().request('GET', '/v1/kv/athomic/jobs/jobs/export?raw');
        const json = res.json as { last: string; token: number; state: string };
        return json.state === 'done' ? json : undefined;
      },
      { timeoutMs: 5_000, message: 'the re-run marked done' },
    );
    expect(record).toEqual({ last: t.toISOString(), token: again.token, state: 'done' });
  }, 60_000);

  it.each([
    ['cooperative sharding', () => compile('jobs-bad', [Ticker], 'cooperative'), 'sharding.mode'],
    [
      'an invalid cron expression',
      () => compile('jobs-bad', [BadExpression]),
      'BadExpression.bad.expression',
    ],
  ])(
    '%s fails init with a DiscoverySettingsError naming the field, before any request',
    async (_, create, path) => {
      const connections = proxy.totalConnections;
      const app = await create();
      const error: unknown = await app.init().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(DiscoverySettingsError);
      expect((error as DiscoverySettingsError).paths).toEqual([path]);
      expect(proxy.totalConnections).toBe(connections);
    },
  );

  it('while it holds a job, each fire is claimed with one transaction: the record is read once per hold, not per fire', async () => {
    const app = await apps.init(await compile('jobs-reads', [Ticker]));
    const mine = () => runs.filter((r) => r.app === 'jobs-reads').length;
    await waitFor(() => mine() >= 2, { timeoutMs: 15_000, message: '2 runs' });
    const recordReads = () => proxy.requests('GET /v1/kv/athomic%2Fjobs%2Fjobs%2Ftick ').length;
    const readsBefore = recordReads();
    const runsBefore = mine();
    await waitFor(() => mine() >= runsBefore + 3, { timeoutMs: 15_000, message: '3 more runs' });
    expect(recordReads() - readsBefore).toBe(0);
    // The record changed by hand meanwhile: the next claim is refused, read again, and goes on.
    const record = await agent.api().request('GET', '/v1/kv/athomic/jobs/jobs/tick?raw');
    await agent.api().request('PUT', '/v1/kv/athomic/jobs/jobs/tick', record.json);
    const afterEdit = mine();
    await waitFor(() => mine() >= afterEdit + 2, {
      timeoutMs: 15_000,
      message: '2 runs after the hand edit',
    });
    await apps.close(app);
  });
});
