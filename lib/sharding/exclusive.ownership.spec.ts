import { afterEach, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { BehaviorSubject, Subject } from 'rxjs';
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
  let catalog: InMemoryCatalog;
  let states: BehaviorSubject<string>;
  let registration: { readonly state: string; lastPassAt?: number; passed$: Subject<number> };
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
    catalog = new InMemoryCatalog();
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
    states = new BehaviorSubject('registered');
    registration = {
      get state() {
        return states.value;
      },
      passed$: new Subject<number>(),
    };
    const workers = new PartitionWorkers(new Logger('test'));
    runs.length = 0;
    workers.add(async (p, { signal }) => {
      runs.push({ p, signal });
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
    });
    ownership = new ExclusiveOwnership(
      settings,
      transport,
      Object.assign(registration, {
        lost$: new Subject<void>(),
        state$: states.asObservable(),
      }) as unknown as SelfRegistration,
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

  it('after a lapse that Consul followed by invalidating the session, a registerSelf() while registered gets a new session and the locks again', async () => {
    // A pass confirmed late, sent before the lease ran out: the lease lapses, runs stop, locks go.
    clock += LEASE_MS;
    registration.passed$.next(clock - LEASE_MS);
    expect(runs.every((r) => r.signal.aborted)).toBe(true);
    const held = async (p: number) =>
      (await transport.readKey(`athomic/sharding/orders/${p}`))?.session !== undefined;
    await waitFor(async () => !(await held(0)) && !(await held(1)), {
      timeoutMs: 5_000,
      message: 'both locks released after the lapse',
    });
    // Consul saw the check critical: the session is invalidated.
    catalog.setPassing('orders-a', false);
    catalog.setPassing('orders-a', true);
    // registerSelf() while registered: the passes come back while it is under way.
    states.next('registering');
    pass();
    states.next('registered');
    ownership.restore();
    await owningBoth();
    expect(runs.map((r) => [r.p, r.signal.aborted])).toEqual([
      [0, true],
      [1, true],
      [0, false],
      [1, false],
    ]);
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

/**
 * The races ownership must survive (no stranded lock, a new token per run, shutdown keeping time
 * for the rest), on a virtual clock (Jest's fake timers move `performance.now()`, `Date.now()`
 * and every timer) over the in-memory locks. Lock answers can be held back: the lock is granted in the store at once, its answer
 * reaches the instance when the test lets it (an answer delayed on the wire).
 */
describe('ExclusiveOwnership: stalls and races', () => {
  const SERVICE_ID = 'orders-a';
  let catalog: InMemoryCatalog;
  let transport: InMemoryTransport;
  let ownership: ExclusiveOwnership;
  let registration: { state: string; lastPassAt?: number; passed$: Subject<number> };
  let heldAnswers: (() => void)[] | undefined;
  let runs: {
    p: number;
    token?: number;
    signal: AbortSignal;
    settle: () => void;
    settled: boolean;
  }[];

  const pass = (): void => {
    registration.lastPassAt = performance.now();
    registration.passed$.next(registration.lastPassAt);
  };
  const tick = (ms = 10): Promise<void> => jest.advanceTimersByTimeAsync(ms);
  /** The partitions whose key this instance's session holds in the store. */
  const heldInConsul = (partitions: number): number[] =>
    Array.from({ length: partitions }, (_, p) => p).filter((p) => {
      const [entry] = transport['locks'].entries(`athomic/sharding/orders/${p}`);
      return entry?.session !== undefined && entry.session === ownership['session'];
    });

  const setup = (partitions: number, drainTimeoutMs = 30_000): void => {
    jest.useFakeTimers({ now: 1_000_000 });
    Logger.overrideLogger(new CapturingLogger());
    const settings = createDiscoverySettings(
      {
        service: { name: 'orders', port: 5001, id: SERVICE_ID },
        healthCheck: { ttl: `${TTL_MS / 1000}s` },
        sharding: { partitions, mode: 'exclusive', drainTimeoutMs, lock: { lockDelay: '1s' } },
      },
      {},
    );
    catalog = new InMemoryCatalog();
    catalog.register(
      {
        serviceId: SERVICE_ID,
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
    const lock = transport.lock.bind(transport);
    heldAnswers = undefined;
    jest.spyOn(transport, 'lock').mockImplementation((key, session, value) => {
      const answer = lock(key, session, value);
      const queue = heldAnswers;
      return queue ? new Promise((resolve) => queue.push(() => resolve(answer))) : answer;
    });
    registration = { state: 'registered', passed$: new Subject<number>() };
    const workers = new PartitionWorkers(new Logger('test'));
    runs = [];
    // A handler that settles only when the test says so (it ignores its signal).
    workers.add((p, { signal, token }) => {
      return new Promise<void>((resolve) => {
        const run = { p, token, signal, settled: false, settle: () => undefined as void };
        run.settle = () => {
          run.settled = true;
          resolve();
        };
        runs.push(run);
      });
    });
    ownership = new ExclusiveOwnership(
      settings,
      transport,
      Object.assign(registration, {
        lost$: new Subject<void>(),
        state$: new BehaviorSubject(registration.state),
      }) as unknown as SelfRegistration,
      workers,
      () => undefined,
      new Logger('test'),
    );
    ownership.start();
  };

  afterEach(async () => {
    for (const run of runs) run.settle();
    const stopped = ownership.stop(Date.now() + 1_000);
    await jest.advanceTimersByTimeAsync(1_000);
    await stopped;
    transport.close();
    jest.useRealTimers();
    jest.restoreAllMocks();
    Logger.overrideLogger(new Logger());
  });

  it('no stranded lock: locks granted after the lease lapsed are run or released once the lease is fresh again', async () => {
    setup(4);
    ownership.assign([0, 1]);
    pass();
    await tick();
    expect(ownership.owned()).toEqual([0, 1]);
    // A membership change gives partitions 2 and 3; their answers are on the wire when the
    // event loop stalls past the lease.
    heldAnswers = [];
    ownership.assign([0, 1, 2, 3]);
    await tick(0);
    expect(heldAnswers).toHaveLength(2);
    await tick(LEASE_MS); // the lease lapses (its timer fires)
    expect(ownership.owned()).toEqual([]);
    for (const answer of heldAnswers.splice(0)) answer();
    heldAnswers = undefined;
    await tick();
    for (const run of runs) run.settle(); // the aborted handlers return
    pass(); // the lease is fresh again
    await tick(5_000);
    // Every lock the session holds is run (owned) — none left held with nobody working it.
    const held = heldInConsul(4);
    expect({ held, owned: held.filter((p) => ownership.owns(p)) }).toEqual({
      held: [0, 1, 2, 3],
      owned: [0, 1, 2, 3],
    });
  });

  it('every run has a new token: after a lapse the next run of p waits for the old one and gets a greater token', async () => {
    setup(1);
    ownership.assign([0]);
    pass();
    await tick();
    expect(runs.map((r) => r.token)).toEqual([1]);
    await tick(LEASE_MS); // lapse: the run is aborted but ignores its signal
    expect(ownership.owns(0)).toBe(false);
    expect(runs[0].signal.aborted).toBe(true);
    pass();
    await tick(5_000);
    // The old run has not settled: no second run beside it.
    expect(runs).toHaveLength(1);
    runs[0].settle();
    await tick(5_000);
    expect(runs.map((r) => [r.token, r.signal.aborted])).toEqual([
      [1, true],
      [2, false],
    ]);
    expect(ownership.token(0)).toBe(2);
  });

  it('every run has a new token: an old run that never settles is abandoned at drainTimeoutMs (logged), then the new run starts', async () => {
    setup(1, 3_000);
    ownership.assign([0]);
    pass();
    await tick();
    await tick(LEASE_MS);
    pass();
    await tick(2_000);
    expect(runs).toHaveLength(1);
    await tick(2_000);
    expect(runs.map((r) => [r.token, r.signal.aborted])).toEqual([
      [1, true],
      [2, false],
    ]);
  });

  it('a grant that comes back after the table moved the partition away is released, no run', async () => {
    setup(2);
    pass();
    heldAnswers = [];
    ownership.assign([0, 1]);
    await tick(0);
    ownership.assign([0]); // the table moves 1 away while its answer is on the wire
    for (const answer of heldAnswers.splice(0)) answer();
    heldAnswers = undefined;
    await tick();
    expect(ownership.owned()).toEqual([0]);
    expect(runs.map((r) => r.p)).toEqual([0]);
    expect(heldInConsul(2)).toEqual([0]);
  });

  it('a lock the prefix shows held by this session with nobody working it is released', async () => {
    setup(2);
    pass();
    // The grant reaches Consul, its answer is lost on the way back; then the table moves the
    // partition away, so nothing here asks for it again.
    const lock = transport.lock.bind(transport);
    jest.spyOn(transport, 'lock').mockImplementationOnce(async (key, session, value) => {
      await lock(key, session, value);
      throw new Error('socket hang up');
    });
    ownership.assign([1]);
    await tick(0);
    ownership.assign([]);
    expect(heldInConsul(2)).toEqual([1]);
    // The prefix's next answer (its blocking query's wait ends) shows it: released.
    await tick(10 * 60_000);
    expect(heldInConsul(2)).toEqual([]);
    expect(runs).toEqual([]);
  });

  it('withdraw (deregisterSelf): owns() false at once, runs drained, locks released, nothing asked until restore', async () => {
    setup(2);
    ownership.assign([0, 1]);
    pass();
    await tick();
    const withdrawn = ownership.withdraw();
    expect(ownership.owned()).toEqual([]);
    expect(heldInConsul(2)).toEqual([0, 1]); // the runs have not settled yet
    for (const run of runs) run.settle();
    await tick();
    await withdrawn;
    const keys = transport['locks'].entries('athomic/sharding/orders/');
    expect(keys.map((k) => k.session)).toEqual([undefined, undefined]);
    pass(); // a heartbeat still in flight does not bring it back
    await tick(1_000);
    expect(ownership.owned()).toEqual([]);
    pass(); // registered again
    ownership.restore();
    await tick();
    expect(ownership.owned()).toEqual([0, 1]);
    expect([ownership.token(0), ownership.token(1)]).toEqual([2, 2]);
  });

  it('shutdown keeps time for deregistering: a slow release is sent, not awaited past half of what the drain left', async () => {
    setup(1);
    ownership.assign([0]);
    pass();
    await tick();
    // The agent applies a release at once, its answer takes 10 s.
    const unlock = transport.unlock.bind(transport);
    jest.spyOn(transport, 'unlock').mockImplementation((key, session) => {
      const answer = unlock(key, session);
      return new Promise((resolve) => setTimeout(() => resolve(answer), 10_000));
    });
    let stoppedAt: number | undefined;
    const start = Date.now();
    // The handler ignores its signal: the drain gets half of 2 s, release and destroy half the rest.
    void ownership.stop(start + 2_000).then(() => (stoppedAt = Date.now() - start));
    await tick(1_600);
    expect(heldInConsul(1)).toEqual([]);
    expect(stoppedAt).toBeDefined();
    expect(stoppedAt).toBeLessThanOrEqual(1_500);
  });

  it('shutdown with acquisitions in flight releases what they were granted', async () => {
    setup(2);
    pass();
    heldAnswers = [];
    ownership.assign([0, 1]);
    await tick(0);
    const stopped = ownership.stop(Date.now() + 2_000);
    for (const answer of heldAnswers.splice(0)) answer();
    heldAnswers = undefined;
    await tick(2_000);
    await stopped;
    expect(runs).toEqual([]);
    const keys = transport['locks'].entries('athomic/sharding/orders/');
    expect(keys.map((k) => k.session)).toEqual([undefined, undefined]);
  });
});
