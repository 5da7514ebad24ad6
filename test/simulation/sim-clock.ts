import { AsyncLocalStorage } from 'node:async_hooks';
import { jest } from '@jest/globals';

/** Virtual time starts here (`Date.now()`); `performance.now()` starts at 0. */
const EPOCH = Date.UTC(2026, 0, 1);

type Callback = () => void;

/**
 * One virtual clock for the whole simulated world (Jest's modern fake timers: `setTimeout`,
 * `Date`, `performance.now()`), plus event-loop stalls of one instance: every timer remembers
 * the instance whose code armed it (an `AsyncLocalStorage` context that follows its promises),
 * and a timer of a stalled instance runs only when the stall ends — while the clock, Consul and
 * the other instances go on. A stalled instance therefore looks at the clock again only after it
 * resumed, as a paused process does.
 */
export class SimClock {
  private readonly owners = new AsyncLocalStorage<string>();
  private readonly stalls = new Map<string, Callback[]>();
  private readonly killed = new Set<string>();
  private readonly waiting = new Map<string, Callback[]>();
  /** When each armed timer is due: the driver moves the clock from one to the next. */
  private readonly due = new Map<object, number>();
  private readonly cancelled = new WeakSet<object>();
  private realSetTimeout?: typeof setTimeout;
  private realClearTimeout?: typeof clearTimeout;
  /**
   * Whether timers remember their instance. Only a scenario with stalls needs it, and the
   * context tracking costs about a quarter of the run time, so it is off otherwise.
   */
  tracksOwners = false;
  /** Called after every timer callback: where the invariants are checked. */
  afterTimer: () => void = () => undefined;

  install(): void {
    jest.useFakeTimers({
      doNotFake: ['nextTick', 'queueMicrotask', 'setImmediate'],
      now: EPOCH,
    });
    const fakeSet = globalThis.setTimeout;
    const fakeClear = globalThis.clearTimeout;
    this.realSetTimeout = fakeSet;
    this.realClearTimeout = fakeClear;
    const wrapped = ((callback: (...args: unknown[]) => void, ms?: number, ...args: unknown[]) => {
      const owner = this.owners.getStore();
      const handle: NodeJS.Timeout = fakeSet(() => {
        this.due.delete(handle);
        const run = (): void => {
          if (this.cancelled.has(handle)) return;
          if (owner !== undefined) this.owners.run(owner, () => callback(...args));
          else callback(...args);
          this.afterTimer();
        };
        if (owner !== undefined && this.killed.has(owner)) return;
        const stalled = owner === undefined ? undefined : this.stalls.get(owner);
        if (stalled) stalled.push(run);
        else run();
      }, ms);
      this.due.set(handle, performance.now() + Math.max(0, ms ?? 0));
      return handle;
    }) as typeof setTimeout;
    globalThis.setTimeout = wrapped;
    globalThis.clearTimeout = (handle?: NodeJS.Timeout | string | number) => {
      if (handle && typeof handle === 'object') {
        this.cancelled.add(handle);
        this.due.delete(handle);
      }
      fakeClear(handle);
    };
  }

  uninstall(): void {
    // Jest's global cleanup keeps every replaced global (our setTimeout wrapper among them) until
    // the test file ends, and the wrapper holds this clock: emptied, it holds no simulated world
    // (a 100,000-schedule run otherwise exhausted the heap at ~32,000).
    this.afterTimer = () => undefined;
    this.stalls.clear();
    this.killed.clear();
    this.waiting.clear();
    this.owners.disable();
    if (this.realSetTimeout) globalThis.setTimeout = this.realSetTimeout;
    if (this.realClearTimeout) globalThis.clearTimeout = this.realClearTimeout;
    this.due.clear();
    jest.clearAllTimers();
    jest.useRealTimers();
  }

  /** `performance.now()` of the virtual clock. */
  now(): number {
    return performance.now();
  }

  /** Runs `work` as code of `owner`: its timers and promises stall with it. */
  as<T>(owner: string, work: () => T): T {
    return this.tracksOwners ? this.owners.run(owner, work) : work();
  }

  /** Runs `work` outside any instance (Consul's side, the network). */
  outside<T>(work: () => T): T {
    return this.tracksOwners ? this.owners.exit(work) : work();
  }

  stall(owner: string): void {
    if (!this.stalls.has(owner)) this.stalls.set(owner, []);
  }

  isKilled(owner: string): boolean {
    return this.killed.has(owner);
  }

  /** Stalled or killed: nothing of it runs. */
  frozen(owner: string): boolean {
    return this.stalls.has(owner) || this.killed.has(owner);
  }

  /** Settles at once for a running instance, when it resumes for a stalled one, never once killed. */
  running(owner: string): Promise<void> {
    if (!this.frozen(owner)) return Promise.resolve();
    return new Promise((resolve) => {
      const list = this.waiting.get(owner) ?? [];
      list.push(resolve);
      this.waiting.set(owner, list);
    });
  }

  /** The instance runs again: its late timers fire now, in the order they were due. */
  resume(owner: string): void {
    if (this.killed.has(owner)) return;
    const late = this.stalls.get(owner);
    this.stalls.delete(owner);
    for (const run of late ?? []) run();
    const waiting = this.waiting.get(owner) ?? [];
    this.waiting.delete(owner);
    for (const resolve of waiting) resolve();
  }

  /** The instance is gone for good (SIGKILL): its timers never fire. */
  kill(owner: string): void {
    this.killed.add(owner);
    this.stalls.delete(owner);
    this.waiting.delete(owner);
  }

  /** When the next armed timer is due; `undefined` when none is. */
  nextDue(): number | undefined {
    let next: number | undefined;
    for (const at of this.due.values()) if (next === undefined || at < next) next = at;
    return next;
  }

  /** Moves the clock by `ms`, firing the timers due meanwhile (microtasks run between them). */
  async advance(ms: number): Promise<void> {
    jest.advanceTimersByTime(ms);
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  /** A virtual delay (an answer on the wire), not stalled with any instance. */
  delay(ms: number): Promise<void> {
    return this.outside(() => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  }
}
