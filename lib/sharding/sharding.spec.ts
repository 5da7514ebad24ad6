import { afterEach, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { CapturingLogger } from '../../test/support/capturing-logger.harness.js';
import type { ServiceInstance } from '../protocol/service-discovery.protocol.js';
import { ShardingSettings } from '../settings/discovery.settings.js';
import { CooperativeOwnership } from './cooperative.ownership.js';
import { HandoffClock } from './handoff-clock.js';
import { PartitionWorkers } from './partition-workers.js';
import { SettleWindow } from './settle-window.js';
import { shardInput } from './shard-membership.js';

const instance = (serviceId: string, meta: Record<string, string> = {}): ServiceInstance => ({
  serviceId,
  name: 'orders',
  address: '127.0.0.1',
  port: 3000,
  tags: [],
  meta,
  node: 'n1',
});

describe('shardInput', () => {
  it('reads weights from meta (invalid or absent → 1) and sorts by serviceId', () => {
    const input = shardInput(
      [
        instance('c', { shardWeight: '3' }),
        instance('a', { shardWeight: 'x' }),
        instance('b', { shardWeight: '1001' }),
      ],
      { partitions: 8, balanceFactor: 1 },
    );
    expect(input?.members).toEqual([
      { serviceId: 'a', weight: 1 },
      { serviceId: 'b', weight: 1 },
      { serviceId: 'c', weight: 3 },
    ]);
  });

  it('takes P and balanceFactor from the lowest serviceId that publishes them', () => {
    const input = shardInput(
      [
        instance('b', { shardPartitions: '32', shardBalance: '1.5' }),
        instance('a'),
        instance('c', { shardPartitions: '16', shardBalance: '1' }),
      ],
      { partitions: 8, balanceFactor: 1 },
    );
    expect(input?.options).toEqual({ partitions: 32, balanceFactor: 1.5 });
  });

  it('falls back to the own settings, or gives nothing without them', () => {
    expect(shardInput([instance('a')], { partitions: 8, balanceFactor: 1 })?.options).toEqual({
      partitions: 8,
      balanceFactor: 1,
    });
    expect(shardInput([instance('a')])).toBeUndefined();
    expect(
      shardInput([instance('a', { shardPartitions: '0' })], { partitions: 4, balanceFactor: 1 })
        ?.options.partitions,
    ).toBe(4);
  });
});

describe('SettleWindow', () => {
  beforeEach(() => {
    jest.useFakeTimers();
  });
  afterEach(() => {
    jest.useRealTimers();
  });

  it('fires settleMs after the last touch of a burst', () => {
    const fire = jest.fn();
    const window = new SettleWindow(500, fire, () => Date.now());
    window.touch();
    jest.advanceTimersByTime(300);
    window.touch();
    jest.advanceTimersByTime(499);
    expect(fire).not.toHaveBeenCalled();
    jest.advanceTimersByTime(1);
    expect(fire).toHaveBeenCalledTimes(1);
  });

  it('fires at most 4 × settleMs after a burst began, however long the churn lasts', () => {
    const fire = jest.fn();
    const window = new SettleWindow(500, fire, () => Date.now());
    for (let t = 0; t < 2_000; t += 100) {
      window.touch();
      jest.advanceTimersByTime(100);
    }
    expect(fire).toHaveBeenCalledTimes(1);
    window.cancel();
    jest.advanceTimersByTime(10_000);
    expect(fire).toHaveBeenCalledTimes(1);
  });
});

describe('PartitionWorkers', () => {
  let logger: CapturingLogger;
  let workers: PartitionWorkers;

  beforeEach(() => {
    logger = new CapturingLogger();
    Logger.overrideLogger(logger);
    workers = new PartitionWorkers(new Logger('test'));
  });
  afterEach(() => {
    Logger.overrideLogger(new Logger());
  });

  it('runs each handler per started partition, with the token, and aborts on release', async () => {
    const seen: string[] = [];
    workers.add(async (p, { signal, token }) => {
      seen.push(`start ${p}:${token}`);
      await new Promise((resolve) => signal.addEventListener('abort', resolve));
      seen.push(`stop ${p}`);
    });
    workers.start(3, 7);
    workers.start(5, 1);
    await workers.release(3, 1_000);
    expect(seen).toEqual(['start 3:7', 'start 5:1', 'stop 3']);
  });

  it('the same function registered twice runs twice per partition, and release aborts both runs', async () => {
    const aborted: number[] = [];
    let runs = 0;
    const handler = async (_p: number, { signal }: { signal: AbortSignal }): Promise<void> => {
      const run = ++runs;
      await new Promise((resolve) => signal.addEventListener('abort', resolve));
      aborted.push(run);
    };
    workers.add(handler);
    const stopSecond = workers.add(handler);
    workers.start(1);
    expect(runs).toBe(2);
    await workers.release(1, 1_000);
    expect(aborted.sort()).toEqual([1, 2]);
    expect(logger.all()).not.toMatch(/did not settle/);
    // Each registration stops its own runs only.
    workers.start(2);
    stopSecond();
    await new Promise((resolve) => setImmediate(resolve));
    expect(aborted.sort()).toEqual([1, 2, 4]);
    await workers.release(2, 1_000);
    expect(aborted.sort()).toEqual([1, 2, 3, 4]);
  });

  it('a handler added later runs for the partitions already started; its stop function aborts it', () => {
    workers.start(1);
    let aborted = false;
    const stop = workers.add((_p, { signal }) => {
      signal.addEventListener('abort', () => (aborted = true));
    });
    stop();
    expect(aborted).toBe(true);
  });

  it('a handler that returned at once, its work tied to its signal, is aborted when its partition is released', async () => {
    let aborted = false;
    workers.add((_p, { signal }) => {
      signal.addEventListener('abort', () => (aborted = true));
    });
    workers.start(1);
    await new Promise((resolve) => setImmediate(resolve));
    await workers.release(1, 1_000);
    expect(aborted).toBe(true);
  });

  it('a run its stop function aborted is still awaited by the release of its partition (the lock waits for it)', async () => {
    let finish!: () => void;
    let stopped = false;
    const stop = workers.add(async (_p, { signal }) => {
      await new Promise<void>((resolve) => (finish = resolve));
      stopped = signal.aborted;
    });
    workers.start(1, 1);
    stop();
    let released = false;
    const release = workers.release(1, 5_000).then(() => (released = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(released).toBe(false);
    finish();
    await release;
    expect(stopped).toBe(true);
    expect(logger.all()).not.toMatch(/did not settle/);
  });

  it('a handler that throws is logged; one that never settles does not hold the release past its bound', async () => {
    workers.add((p) => {
      if (p === 1) throw new Error('boom');
      return new Promise<void>(() => undefined);
    });
    workers.start(1);
    workers.start(2);
    await new Promise((resolve) => setImmediate(resolve));
    expect(logger.all()).toMatch(/handler of partition 1 failed: boom/);
    const started = performance.now();
    await workers.release(2, 100);
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(logger.all()).toMatch(/partition 2 did not settle within 100 ms/);
  });
});

describe('CooperativeOwnership', () => {
  beforeEach(() => {
    jest.useFakeTimers();
  });
  afterEach(() => {
    jest.useRealTimers();
  });

  function setup(honoursSignal = true): {
    ownership: CooperativeOwnership;
    changes: [number[], number[]][];
    log: string[];
  } {
    const settings = Object.assign(new ShardingSettings(), {
      partitions: 8,
      handoffDelayMs: 250,
      drainTimeoutMs: 1_000,
    });
    const workers = new PartitionWorkers(new Logger('test'));
    const log: string[] = [];
    workers.add(async (p, { signal }) => {
      log.push(`start ${p}`);
      // A hung handler ignores its signal and never settles.
      await new Promise((resolve) => {
        if (honoursSignal) signal.addEventListener('abort', resolve);
      });
      log.push(`stop ${p}`);
    });
    const changes: [number[], number[]][] = [];
    const ownership = new CooperativeOwnership(settings, workers, (a, r) => changes.push([a, r]));
    return { ownership, changes, log };
  }

  it('gained partitions start handoffDelayMs later; lost ones stop at once (revoke, then assign)', async () => {
    const { ownership, changes, log } = setup();
    ownership.assign([1, 2, 3]);
    expect(ownership.owned()).toEqual([]);
    await jest.advanceTimersByTimeAsync(250);
    expect(ownership.owned()).toEqual([1, 2, 3]);
    expect(log).toEqual(['start 1', 'start 2', 'start 3']);

    ownership.assign([2, 3, 4]);
    expect(ownership.owns(1)).toBe(false);
    expect(ownership.owns(4)).toBe(false);
    await jest.advanceTimersByTimeAsync(0);
    expect(log.at(-1)).toBe('stop 1');
    await jest.advanceTimersByTimeAsync(250);
    expect(ownership.owned()).toEqual([2, 3, 4]);
    expect(changes).toEqual([
      [[1, 2, 3], []],
      [[], [1]],
      [[4], []],
    ]);
    expect(ownership.token()).toBeUndefined();
  });

  it('a newer table within the handoff delay replaces the pending gains; each starts handoffDelayMs after the first table that gave it', async () => {
    const { ownership, changes, log } = setup();
    ownership.assign([1, 2]);
    await jest.advanceTimersByTimeAsync(100);
    ownership.assign([2, 5]); // 1 is no longer gained; 2 keeps its delay; 5 starts its own
    await jest.advanceTimersByTimeAsync(149);
    expect(ownership.owned()).toEqual([]);
    await jest.advanceTimersByTimeAsync(1); // t = 250: 2 was given at 0
    expect(ownership.owned()).toEqual([2]);
    await jest.advanceTimersByTimeAsync(99);
    expect(ownership.owned()).toEqual([2]);
    await jest.advanceTimersByTimeAsync(1); // t = 350: 5 was given at 100
    expect(ownership.owned()).toEqual([2, 5]);
    await jest.advanceTimersByTimeAsync(1_000);
    expect(log).toEqual(['start 2', 'start 5']);
    expect(changes).toEqual([
      [[2], []],
      [[5], []],
    ]);
  });

  it('recomputes with the same target faster than handoffDelayMs do not restart the delay', async () => {
    const { ownership } = setup();
    for (let t = 0; t < 1_000; t += 100) {
      ownership.assign([1, 2]);
      await jest.advanceTimersByTimeAsync(100);
      if (t + 100 >= 250) expect(ownership.owned()).toEqual([1, 2]);
    }
  });

  it('a partition lost and given again waits handoffDelayMs from the table that gave it back', async () => {
    const { ownership, log } = setup();
    ownership.assign([1]);
    await jest.advanceTimersByTimeAsync(250);
    ownership.assign([]);
    await jest.advanceTimersByTimeAsync(50);
    ownership.assign([1]);
    await jest.advanceTimersByTimeAsync(249);
    expect(ownership.owns(1)).toBe(false);
    await jest.advanceTimersByTimeAsync(1);
    expect(ownership.owns(1)).toBe(true);
    expect(log).toEqual(['start 1', 'stop 1', 'start 1']);
  });

  it('stop() releases everything and waits for the handlers', async () => {
    const { ownership, changes, log } = setup();
    ownership.assign([1, 2]);
    await jest.advanceTimersByTimeAsync(250);
    await ownership.stop(Date.now() + 1_000);
    expect(ownership.owned()).toEqual([]);
    expect(changes.at(-1)).toEqual([[], [1, 2]]);
    expect(log.slice(-2)).toEqual(['stop 1', 'stop 2']);
  });

  it('stop() gives hung handlers at most half of what remains of the deadline: the rest is for release and deregistration', async () => {
    const { ownership } = setup(false);
    ownership.assign([1, 2]);
    await jest.advanceTimersByTimeAsync(250);
    let stopped = false;
    void ownership.stop(Date.now() + 1_000).then(() => (stopped = true));
    await jest.advanceTimersByTimeAsync(499);
    expect(stopped).toBe(false);
    await jest.advanceTimersByTimeAsync(1);
    expect(stopped).toBe(true);
  });

  it('stop() during a handoff delay starts nothing', async () => {
    const { ownership, log } = setup();
    ownership.assign([1]);
    await ownership.stop(Date.now() + 1_000);
    await jest.advanceTimersByTimeAsync(1_000);
    expect(log).toEqual([]);
    expect(ownership.owned()).toEqual([]);
  });
});

describe('HandoffClock', () => {
  it('runs from the first membership change until owned matches the table', () => {
    let now = 1_000;
    const clock = new HandoffClock(() => now);
    expect(clock.elapsed()).toBeUndefined();
    clock.begin();
    now += 200;
    clock.begin(); // a second change of the same burst: the handoff began earlier
    now += 300;
    expect(clock.elapsed()).toBe(0.5);
    clock.settle([1, 2], [1, 2, 3]); // partition 3 still to come
    now += 250;
    expect(clock.elapsed()).toBe(0.75);
    clock.settle([1, 2, 3], [1, 2, 3]);
    expect(clock.elapsed()).toBeUndefined();
    clock.begin();
    now += 100;
    expect(clock.elapsed()).toBe(0.1);
  });
});
