import { afterEach, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { Subject } from 'rxjs';
import { CapturingLogger } from '../../test/support/capturing-logger.harness.js';
import { waitFor } from '../../test/support/wait-for.harness.js';
import type { SelfRegistration } from '../registration/self-registration.js';
import { createDiscoverySettings } from '../settings/discovery-settings.factory.js';
import { InMemoryCatalog } from '../testing/in-memory.catalog.js';
import { InMemoryTransport } from '../testing/in-memory.transport.js';
import { ExclusiveOwnership } from './exclusive.ownership.js';
import { PartitionWorkers } from './partition-workers.js';

const TTL_MS = 60_000;
const LEASE_MS = TTL_MS - TTL_MS / 10;

/**
 * The lease on a clock the test moves (`performance.now()`), over the in-memory locks; the
 * registration is a stand-in whose passes the test emits.
 */
describe('ExclusiveOwnership: the lease', () => {
  let clock: number;
  let transport: InMemoryTransport;
  let ownership: ExclusiveOwnership;
  let registration: { state: string; lastPassAt?: number; passed$: Subject<number> };
  const runs: { p: number; signal: AbortSignal }[] = [];

  const pass = (): void => {
    registration.lastPassAt = clock;
    registration.passed$.next(clock);
  };
  const owningBoth = () =>
    waitFor(() => ownership.owns(0) && ownership.owns(1), {
      timeoutMs: 5_000,
      message: 'partitions 0 and 1 owned',
    });

  beforeEach(async () => {
    clock = 1_000;
    jest.spyOn(performance, 'now').mockImplementation(() => clock);
    Logger.overrideLogger(new CapturingLogger());
    const settings = createDiscoverySettings(
      {
        service: { name: 'orders', port: 5001, id: 'orders-a' },
        healthCheck: { ttl: `${TTL_MS / 1000}s` },
        sharding: { partitions: 2, mode: 'exclusive', lock: { lockDelay: '1s' } },
      },
      {},
    );
    const catalog = new InMemoryCatalog();
    catalog.register(
      {
        serviceId: 'orders-a',
        name: 'orders',
        address: '127.0.0.1',
        port: 5001,
        tags: [],
        meta: {},
        node: 'n1',
      },
      { ttl: true, passing: true },
    );
    transport = new InMemoryTransport(catalog);
    registration = { state: 'registered', passed$: new Subject<number>() };
    const workers = new PartitionWorkers(new Logger('test'));
    runs.length = 0;
    workers.add(async (p, { signal }) => {
      runs.push({ p, signal });
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
    });
    ownership = new ExclusiveOwnership(
      settings,
      transport,
      Object.assign(registration, { lost$: new Subject<void>() }) as unknown as SelfRegistration,
      workers,
      () => undefined,
      new Logger('test'),
    );
    ownership.start();
    ownership.assign([0, 1]);
    pass();
    await owningBoth();
    expect(runs.map((r) => r.p)).toEqual([0, 1]);
  });

  afterEach(async () => {
    jest.useRealTimers();
    await ownership.stop(Date.now() + 1_000);
    transport.close();
    jest.restoreAllMocks();
    Logger.overrideLogger(new Logger());
  });

  it('a pass that comes after the lease ran out does not revive it: handlers stop, locks again', async () => {
    clock += LEASE_MS; // its timer (real time) is far away: only owns() has seen it stale
    expect(ownership.owns(0)).toBe(false);
    pass();
    expect(runs.every((r) => r.signal.aborted)).toBe(true);
    await owningBoth();
    expect(runs.map((r) => [r.p, r.signal.aborted])).toEqual([
      [0, true],
      [1, true],
      [0, false],
      [1, false],
    ]);
  });

  it('a pass while the lease is fresh carries it on, handlers untouched', () => {
    clock += LEASE_MS - 1;
    pass();
    clock += LEASE_MS - 1;
    expect(ownership.owns(0) && ownership.owns(1)).toBe(true);
    expect(runs.map((r) => r.signal.aborted)).toEqual([false, false]);
  });

  it('a lapse timer that fires before the clock reaches the lease end waits out the rest', async () => {
    jest.useFakeTimers({
      doNotFake: ['performance', 'nextTick', 'queueMicrotask', 'setImmediate'],
    });
    pass(); // arms the lapse timer under the fake timers
    clock += LEASE_MS - 5; // the timer fires 5 ms early by the lease's clock
    await jest.advanceTimersByTimeAsync(LEASE_MS);
    expect(runs.map((r) => r.signal.aborted)).toEqual([false, false]);
    clock += 5;
    await jest.advanceTimersByTimeAsync(5);
    expect(ownership.owns(0)).toBe(false);
    expect(runs.map((r) => r.signal.aborted)).toEqual([true, true]);
  });
});
