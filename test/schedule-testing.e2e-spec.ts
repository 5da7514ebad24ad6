import 'reflect-metadata';
import { Injectable } from '@nestjs/common';
import { Cron, ScheduleModule, SchedulerRegistry } from '@nestjs/schedule';
import { TerminusModule } from '@nestjs/terminus';
import { Test, type TestingModule } from '@nestjs/testing';
import { firstValueFrom, filter } from 'rxjs';
import { DiscoverySettingsError, ShardingService } from '../lib/index.js';
import {
  ClusterCron,
  ClusterScheduleModule,
  ClusterScheduler,
  type JobFire,
} from '../lib/schedule/index.js';
import { DiscoveryTestingModule, InMemoryDiscovery } from '../lib/testing/index.js';
import { DiscoveryHealthIndicator } from '../lib/terminus/index.js';
import { CapturingLogger, waitFor } from './support/index.js';

// @ClusterCron on the in-memory double (DiscoveryTestingModule): the jobs run in memory, and a
// test fires one at a given instant with ClusterScheduler.fire() instead of waiting for the clock.

const fires: JobFire[] = [];

@Injectable()
class Ticks {
  @ClusterCron('* * * * * *', { name: 'tick' })
  tick(fire: JobFire): void {
    fires.push(fire);
  }
}

@Injectable()
class Exports {
  /** The first run waits for its signal: it is aborted unfinished. */
  @ClusterCron('0 0 0 1 1 *', { name: 'export', delivery: 'at-least-once' })
  async export(fire: JobFire): Promise<void> {
    fires.push(fire);
    if (fires.length > 1) return;
    await new Promise((resolve) => fire.signal.addEventListener('abort', resolve, { once: true }));
  }
}

@Injectable()
class Reports {
  // Once a year: the clock never fires them during the test, only fire() does.
  @ClusterCron('0 0 0 1 1 *', { name: 'report', timeZone: 'Europe/Paris' })
  report(fire: JobFire): void {
    fires.push(fire);
  }

  @ClusterCron('0 0 0 1 1 *', { name: 'broken' })
  broken(): void {
    throw new Error('boom');
  }
}

async function compile(
  providers: unknown[],
  sharding: object | null = {
    partitions: 4,
    mode: 'exclusive',
    settleMs: 10,
    lock: { lockDelay: '100ms' },
  },
): Promise<TestingModule> {
  const app = await Test.createTestingModule({
    imports: [
      DiscoveryTestingModule.forRoot({
        self: { name: 'jobs', port: 5001, serviceId: 'jobs-a' },
        sharding: sharding ?? undefined,
      }),
      ScheduleModule.forRoot(),
      ClusterScheduleModule.forRoot({}),
      TerminusModule,
    ],
    providers: [DiscoveryHealthIndicator, ...(providers as never[])],
  })
    .setLogger(logs)
    .compile();
  apps.push(app);
  return app;
}

const apps: TestingModule[] = [];
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()));
});

let logs: CapturingLogger;
beforeEach(() => {
  fires.length = 0;
  logs = new CapturingLogger();
});

describe('@ClusterCron on DiscoveryTestingModule', () => {
  it('the owner runs a fired instant once, with its token; a second fire of it is not run; jobs are in SchedulerRegistry', async () => {
    const app = await compile([Reports]);
    await app.init();
    const sharding = app.get(ShardingService);
    const scheduler = app.get(ClusterScheduler);
    await firstValueFrom(sharding.assignments$.pipe(filter((a) => a.owned.length === 4)));
    expect(app.get(SchedulerRegistry).getCronJob('report')).toBeDefined();
    await waitFor(() => scheduler.running().length === 2, {
      timeoutMs: 5_000,
      message: 'holds both jobs',
    });
    expect(scheduler.running()).toEqual(['broken', 'report']);
    // The health details list them.
    const health = await app.get(DiscoveryHealthIndicator).isHealthy();
    expect(health.discovery).toMatchObject({ status: 'up', jobs: ['broken', 'report'] });

    const t1 = new Date('2020-12-31T23:00:00.000Z');
    await scheduler.fire('report', t1);
    await scheduler.fire('report', t1);
    const token = sharding.token(sharding.partitionOf('job:report'));
    expect(fires.map((f) => [f.name, f.scheduledAt.toISOString(), f.token, f.late])).toEqual([
      ['report', t1.toISOString(), token, false],
    ]);

    // Three instants later: T runs, the two in between are reported skipped.
    const t4 = new Date('2023-12-31T23:00:00.000Z');
    await scheduler.fire('report', t4);
    expect(fires.map((f) => f.scheduledAt.toISOString())).toEqual([
      t1.toISOString(),
      t4.toISOString(),
    ]);
    expect(logs.lines('warn').join('\n')).toMatch(
      /Job "report": skipped 2 instant\(s\): 2021-12-31T23:00:00.000Z, 2022-12-31T23:00:00.000Z/,
    );

    // A throwing handler is logged; the schedule goes on.
    await scheduler.fire('broken', new Date('2021-01-01T00:00:00.000Z'));
    await scheduler.fire('broken', new Date('2022-01-01T00:00:00.000Z'));
    expect(logs.lines('error').filter((l) => l.includes('Job "broken" failed'))).toHaveLength(2);
  });

  it('on the clock: an instance that lost the partition runs nothing; back with a higher token, it catches up late', async () => {
    const app = await compile([Ticks]);
    await app.init();
    const sharding = app.get(ShardingService);
    const scheduler = app.get(ClusterScheduler);
    const owning = (n: number) =>
      firstValueFrom(sharding.assignments$.pipe(filter((a) => a.owned.length === n)));
    await owning(4);
    await waitFor(() => scheduler.running().length === 1, {
      timeoutMs: 5_000,
      message: 'holds tick',
    });
    const before = sharding.token(sharding.partitionOf('job:tick'))!;
    await waitFor(() => fires.length >= 2, { timeoutMs: 5_000, message: 'two ticks' });

    app.get(InMemoryDiscovery).setPassing('jobs-a', false);
    await owning(0);
    expect(scheduler.running()).toEqual([]);
    const lost = fires.length;
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(fires).toHaveLength(lost);

    app.get(InMemoryDiscovery).setPassing('jobs-a', true);
    await owning(4);
    const late = await waitFor(() => fires.slice(lost).find((f) => f.late), {
      timeoutMs: 5_000,
      message: 'a late catch-up run',
    });
    expect(late.token).toBeGreaterThan(before);
    // One run per instant, in order.
    const instants = fires.map((f) => f.scheduledAt.getTime());
    expect(new Set(instants).size).toBe(instants.length);
    expect([...instants].sort((a, b) => a - b)).toEqual(instants);
  });
});

describe('@ClusterCron delivery', () => {
  it('at-least-once: a run aborted unfinished (the partition lost) runs again on the next hold, late, with a higher token', async () => {
    const app = await compile([Exports]);
    await app.init();
    const scheduler = app.get(ClusterScheduler);
    const sharding = app.get(ShardingService);
    const owning = (n: number) =>
      firstValueFrom(sharding.assignments$.pipe(filter((a) => a.owned.length === n)));
    await waitFor(() => scheduler.running().length === 1, {
      timeoutMs: 5_000,
      message: 'holds export',
    });
    const t = new Date('2021-12-31T23:00:00.000Z');
    const first = scheduler.fire('export', t);
    await waitFor(() => fires.length === 1, { timeoutMs: 5_000, message: 'the first run' });

    app.get(InMemoryDiscovery).setPassing('jobs-a', false);
    await owning(0);
    await first;
    expect(fires[0].signal.aborted).toBe(true);

    app.get(InMemoryDiscovery).setPassing('jobs-a', true);
    const again = await waitFor(() => fires[1], { timeoutMs: 5_000, message: 'the run again' });
    expect(again.scheduledAt).toEqual(t);
    expect(again.late).toBe(true);
    expect(again.token).toBeGreaterThan(fires[0].token);
  });
});

describe('@ClusterCron boot errors', () => {
  it.each([
    ['cooperative sharding', { partitions: 4, mode: 'cooperative' }, 'sharding.mode'],
    ['no sharding', null, 'sharding.mode'],
  ])('%s → DiscoverySettingsError naming the mode', async (_, sharding, path) => {
    const app = await compile([Reports], sharding);
    const error = await app.init().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(DiscoverySettingsError);
    expect((error as DiscoverySettingsError).paths).toEqual([path]);
  });

  it('a duplicate name, also against a plain @Cron → DiscoverySettingsError naming it', async () => {
    @Injectable()
    class Twice {
      @ClusterCron('* * * * * *', { name: 'report' })
      again(): void {}

      @Cron('* * * * * *', { name: 'plain' })
      plain(): void {}

      @ClusterCron('* * * * * *', { name: 'plain' })
      clash(): void {}
    }
    const app = await compile([Reports, Twice]);
    const error = await app.init().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(DiscoverySettingsError);
    expect((error as DiscoverySettingsError).paths.sort()).toEqual([
      'Twice.again.name',
      'Twice.clash.name',
    ]);
    expect((error as Error).message).toMatch(/report names two cron jobs/);
  });
});
