import 'reflect-metadata';
import { ViolationCollector } from '../protocol/input.reader.js';
import { ClusterCron, type DeclaredJob } from './cluster-cron.decorator.js';
import { decideAcquisition, decideFire, parseJobRecord, type JobRecord } from './fire-decision.js';
import { readJob } from './job.arguments.js';
import { JobSchedule, MAX_LISTED_INSTANTS } from './job-schedule.js';
import type { JobDefinition } from './job.types.js';
import { CLUSTER_CRON_JOBS } from './schedule.constants.js';

const at = (iso: string): Date => new Date(iso);
const iso = (dates: Date[]): string[] => dates.map((d) => d.toISOString());

describe('JobSchedule', () => {
  const everySecond = new JobSchedule('* * * * * *');
  const paris = new JobSchedule('0 30 2 * * *', 'Europe/Paris');

  it('next() is the first instant strictly after, in the time zone', () => {
    expect(everySecond.next(at('2026-12-07T10:00:00.000Z'))).toEqual(
      at('2026-12-07T10:00:01.000Z'),
    );
    expect(everySecond.next(at('2026-12-07T10:00:00.999Z'))).toEqual(
      at('2026-12-07T10:00:01.000Z'),
    );
    // 02:30 in Paris is 01:30 UTC in winter.
    expect(paris.next(at('2026-12-07T00:00:00.000Z'))).toEqual(at('2026-12-07T01:30:00.000Z'));
  });

  it('latestAtOrBefore() names the instant a timer was set for, whatever it ran at', () => {
    expect(everySecond.latestAtOrBefore(at('2026-12-07T10:00:05.000Z'))).toEqual(
      at('2026-12-07T10:00:05.000Z'),
    );
    expect(everySecond.latestAtOrBefore(at('2026-12-07T10:00:05.730Z'))).toEqual(
      at('2026-12-07T10:00:05.000Z'),
    );
    expect(paris.latestAtOrBefore(at('2026-12-07T01:29:59.000Z'))).toEqual(
      at('2026-12-06T01:30:00.000Z'),
    );
    expect(new JobSchedule('0 0 0 1 1 *').latestAtOrBefore(at('2026-12-07T00:00:00.000Z'))).toEqual(
      at('2026-01-01T00:00:00.000Z'),
    );
  });

  it('between() lists the open interval, capped', () => {
    const gap = everySecond.between(at('2026-12-07T10:00:00.000Z'), at('2026-12-07T10:00:04.000Z'));
    expect(iso(gap.instants)).toEqual([
      '2026-12-07T10:00:01.000Z',
      '2026-12-07T10:00:02.000Z',
      '2026-12-07T10:00:03.000Z',
    ]);
    expect(gap.more).toBe(false);
    const day = everySecond.between(at('2026-12-06T10:00:00.000Z'), at('2026-12-07T10:00:00.000Z'));
    expect(day.instants).toHaveLength(MAX_LISTED_INSTANTS);
    expect(day.more).toBe(true);
  });
});

describe('fire decisions', () => {
  const schedule = new JobSchedule('* * * * * *');
  const definition: Pick<JobDefinition, 'delivery' | 'misfire' | 'misfireGraceMs'> = {
    delivery: 'at-most-once',
    misfire: 'run-once',
    misfireGraceMs: 60_000,
  };
  const record = (last: string, token: number, state: JobRecord['state'] = 'done'): JobRecord => ({
    last,
    token,
    state,
  });

  it('a fire runs T on time, reports the instants since last skipped, and claims T', () => {
    const claim = decideFire(
      { definition, schedule, token: 7, record: record('2026-12-07T10:00:00.000Z', 6) },
      at('2026-12-07T10:00:03.000Z'),
    );
    expect(claim?.run).toEqual({ scheduledAt: at('2026-12-07T10:00:03.000Z'), late: false });
    expect(iso(claim!.skipped)).toEqual(['2026-12-07T10:00:01.000Z', '2026-12-07T10:00:02.000Z']);
    expect(claim?.record).toEqual({ last: '2026-12-07T10:00:03.000Z', token: 7, state: 'claimed' });
  });

  it('a fire at or before last is not claimed again (by anyone)', () => {
    const input = { definition, schedule, token: 7, record: record('2026-12-07T10:00:03.000Z', 7) };
    expect(decideFire(input, at('2026-12-07T10:00:03.000Z'))).toBeUndefined();
    expect(decideFire(input, at('2026-12-07T10:00:02.000Z'))).toBeUndefined();
  });

  it('the first fire ever starts the record', () => {
    const claim = decideFire({ definition, schedule, token: 1 }, at('2026-12-07T10:00:03.000Z'));
    expect(claim).toMatchObject({ run: { late: false }, skipped: [], record: { token: 1 } });
  });

  it('acquisition, run-once: the latest missed instant runs late, the others are skipped', () => {
    const claim = decideAcquisition(
      { definition, schedule, token: 9, record: record('2026-12-07T10:00:00.000Z', 8, 'claimed') },
      at('2026-12-07T10:00:04.400Z'),
    );
    expect(claim?.run).toEqual({ scheduledAt: at('2026-12-07T10:00:04.000Z'), late: true });
    expect(iso(claim!.skipped)).toEqual([
      '2026-12-07T10:00:01.000Z',
      '2026-12-07T10:00:02.000Z',
      '2026-12-07T10:00:03.000Z',
    ]);
    expect(claim?.record).toEqual({ last: '2026-12-07T10:00:04.000Z', token: 9, state: 'claimed' });
  });

  it('acquisition, run-once beyond misfireGraceMs, or skip: all reported skipped, claimed done', () => {
    const input = { schedule, token: 9, record: record('2026-12-07T10:00:00.000Z', 8) };
    for (const claim of [
      decideAcquisition(
        { ...input, definition: { ...definition, misfireGraceMs: 300 } },
        at('2026-12-07T10:00:02.400Z'),
      ),
      decideAcquisition(
        { ...input, definition: { ...definition, misfire: 'skip' } },
        at('2026-12-07T10:00:02.400Z'),
      ),
    ]) {
      expect(claim?.run).toBeUndefined();
      expect(iso(claim!.skipped)).toEqual(['2026-12-07T10:00:01.000Z', '2026-12-07T10:00:02.000Z']);
      expect(claim?.record).toEqual({ last: '2026-12-07T10:00:02.000Z', token: 9, state: 'done' });
    }
  });

  it('acquisition with nothing missed, or never claimed: nothing', () => {
    const input = { definition, schedule, token: 9, record: record('2026-12-07T10:00:02.000Z', 8) };
    expect(decideAcquisition(input, at('2026-12-07T10:00:02.900Z'))).toBeUndefined();
    expect(
      decideAcquisition({ definition, schedule, token: 9 }, at('2026-12-07T10:00:02.900Z')),
    ).toBeUndefined();
  });

  it('at-least-once: an unfinished claim of an older token runs again, late, with the new token', () => {
    const input = {
      definition: { ...definition, delivery: 'at-least-once' as const },
      schedule,
      token: 9,
      record: record('2026-12-07T10:00:02.000Z', 8, 'claimed'),
    };
    const claim = decideAcquisition(input, at('2026-12-07T10:00:02.500Z'));
    expect(claim?.run).toEqual({ scheduledAt: at('2026-12-07T10:00:02.000Z'), late: true });
    expect(claim?.record).toEqual({ last: '2026-12-07T10:00:02.000Z', token: 9, state: 'claimed' });
    // Finished, or this instance's own claim: the misfire rule as usual.
    expect(
      decideAcquisition(
        { ...input, record: record('2026-12-07T10:00:02.000Z', 8, 'done') },
        at('2026-12-07T10:00:02.500Z'),
      ),
    ).toBeUndefined();
    expect(
      decideAcquisition(
        { ...input, record: record('2026-12-07T10:00:02.000Z', 9, 'claimed') },
        at('2026-12-07T10:00:02.500Z'),
      ),
    ).toBeUndefined();
  });

  it('parseJobRecord accepts only a record', () => {
    expect(parseJobRecord('{"last":"2026-12-07T10:00:02.000Z","token":3,"state":"done"}')).toEqual(
      record('2026-12-07T10:00:02.000Z', 3),
    );
    for (const bad of [
      '',
      'x',
      '{}',
      '{"last":"no","token":3,"state":"done"}',
      '{"last":"2026-12-07T10:00:02.000Z","token":3}',
    ]) {
      expect(parseJobRecord(bad)).toBeUndefined();
    }
  });
});

describe('@ClusterCron arguments', () => {
  class Jobs {
    @ClusterCron('*/5 * * * * *', {
      name: 'ok',
      timeZone: 'Europe/Paris',
      delivery: 'at-least-once',
    })
    ok(): void {}
  }
  const declared = (): DeclaredJob[] =>
    Reflect.getMetadata(CLUSTER_CRON_JOBS, Jobs) as DeclaredJob[];

  it('a valid job gets its defaults', () => {
    const out = new ViolationCollector();
    const read = readJob(declared()[0], 'Jobs', Jobs.prototype.ok, out);
    expect(out.empty).toBe(true);
    expect(read?.definition).toEqual({
      name: 'ok',
      expression: '*/5 * * * * *',
      timeZone: 'Europe/Paris',
      delivery: 'at-least-once',
      misfire: 'run-once',
      misfireGraceMs: 60_000,
      overlap: 'skip',
    });
  });

  it.each([
    [{ key: 'm', expression: 'nope', options: { name: 'j' } }, 'Jobs.m.expression'],
    [
      { key: 'm', expression: '* * * * * *', options: { name: 'j', timeZone: 'Mars/Olympus' } },
      'Jobs.m.timeZone',
    ],
    [{ key: 'm', expression: '* * * * * *', options: { name: '' } }, 'Jobs.m.name'],
    [
      { key: 'm', expression: '* * * * * *', options: { name: 'j', delivery: 'exactly-once' } },
      'Jobs.m.delivery',
    ],
    [
      { key: 'm', expression: '* * * * * *', options: { name: 'j', misfire: 'all' } },
      'Jobs.m.misfire',
    ],
    [
      { key: 'm', expression: '* * * * * *', options: { name: 'j', misfireGraceMs: -1 } },
      'Jobs.m.misfireGraceMs',
    ],
    [
      { key: 'm', expression: '* * * * * *', options: { name: 'j', overlap: 'queue' } },
      'Jobs.m.overlap',
    ],
    [{ key: 'm', expression: '* * * * * *', options: { name: 'j', every: 1 } }, 'Jobs.m.every'],
  ])('%j is refused, naming %s', (job, path) => {
    const out = new ViolationCollector();
    expect(readJob(job, 'Jobs', () => undefined, out)).toBeUndefined();
    expect(out.violations.map((v) => v.path)).toEqual([path]);
  });

  it('a handler that is not a method is refused, naming it', () => {
    const out = new ViolationCollector();
    const job = { key: 'field', expression: '* * * * * *', options: { name: 'j' } };
    expect(readJob(job, 'Jobs', 42, out)).toBeUndefined();
    expect(out.violations.map((v) => v.path)).toEqual(['Jobs.field']);
  });
});
