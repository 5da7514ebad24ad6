import type { Scheduler } from 'fast-check';
import { CONSUL_CLIENT, DISCOVERY_SETTINGS } from '../../lib/discovery.constants.js';
import { discoveryCoreProviders } from '../../lib/discovery.providers.js';
import { DiscoveryService } from '../../lib/discovery.service.js';
import { createDiscoverySettings } from '../../lib/settings/discovery-settings.factory.js';
import type { DiscoverySettings } from '../../lib/settings/discovery.settings.js';
import type { PartitionHandler } from '../../lib/sharding/partition-workers.js';
import { shardInput } from '../../lib/sharding/shard-membership.js';
import { ShardTable } from '../../lib/sharding/shard-table.js';
import { ShardingService } from '../../lib/sharding/sharding.service.js';
import { seededRandom } from '../support/seeded-random.harness.js';
import type { SimClock } from './sim-clock.js';
import { SimInjector } from './sim-injector.js';
import { SimConsul, SimTransport } from './sim-consul.js';

export const SERVICE = 'orders';
export const TTL_MS = 3_000;
/**
 * Above the lease (`ttl − 1 s` = 2 s): an invalidation (agent restart, session destroyed) frees
 * the locks after the lock-delay, and a stalled instance only stops owning when its lease ends.
 * With a lock-delay under the lease the simulation finds two owners at once (seed 2171 with
 * `500ms`): a limit of the design, documented in test/simulation/README.md.
 */
export const LOCK_DELAY_MS = 2_500;
export const SETTLE_MS = 100;
export const HANDOFF_DELAY_MS = 250;
/** Above `shutdownTimeoutMs`: at shutdown, the rule that keeps time for deregistration must act. */
export const DRAIN_TIMEOUT_MS = 2_500;
export const SHUTDOWN_TIMEOUT_MS = 2_000;
/** Once faults stop, every partition is run by its owner alone within this. */
export const CONVERGENCE_MS = TTL_MS + LOCK_DELAY_MS + SETTLE_MS + HANDOFF_DELAY_MS + 1_000;
/**
 * A handler that ignores its signal is a fault that never stops: a partition it works is
 * released (exclusive) only after `drainTimeoutMs`, so the bound grows by that much.
 */
export const IGNORED_SIGNAL_MS = DRAIN_TIMEOUT_MS;
const LOCK_PREFIX = `athomic/sharding/${SERVICE}/`;
const WRITE_EVERY_MS = 500;
/** A handler that ignores its signal goes on this long after the abort. */
const IGNORES_FOR_MS = DRAIN_TIMEOUT_MS + 1_000;
/** Step slack for "handoff timers count from the table" (the invariants are looked at per step). */
const HANDOFF_SLACK_MS = 60;
export const MAX_INSTANCES = 4;

export type Mode = 'cooperative' | 'exclusive';
export type Behaviour = 'cooperative' | 'ignores' | 'throws';

export type Fault =
  | { kind: 'stall'; who: number; ms: number }
  | { kind: 'losePasses'; who: number; ms: number }
  | { kind: 'slow'; who: number; ms: number; delayMs: number }
  | { kind: 'invalidate'; who: number }
  | { kind: 'agentRestart'; who: number }
  | { kind: 'kill'; who: number }
  | { kind: 'term'; who: number }
  | { kind: 'flap'; who: number; times: number; everyMs: number }
  | { kind: 'deregister'; who: number }
  | { kind: 'register'; who: number }
  | { kind: 'doubleHandler'; who: number }
  | { kind: 'spawn'; behaviour: Behaviour };

export interface Scenario {
  mode: Mode;
  partitions: number;
  behaviours: Behaviour[];
  seed: number;
  steps: { waitMs: number; fault: Fault }[];
}

/** The first broken rule of a schedule. */
export class Violation extends Error {
  override readonly name = 'Violation';
}

interface Run {
  instance: Instance;
  partition: number;
  token?: number;
  signal: AbortSignal;
  /** One ownership of the partition in one instance (several handlers share it). */
  episode: number;
}

type Lifecycle = 'booting' | 'up' | 'closing' | 'closed' | 'killed';

interface Instance {
  id: string;
  behaviour: Behaviour;
  transport: SimTransport;
  handler: PartitionHandler;
  lifecycle: Lifecycle;
  sharding?: ShardingService;
  discovery?: DiscoveryService;
  app?: SimInjector;
  /** deregisterSelf() or close() resolved, and no registerSelf() since: Consul must not hold it. */
  mustBeAbsent: boolean;
  /** deregisterSelf() was called, and no registerSelf() since: `owns()` is false (exclusive). */
  deregistering: boolean;
  /** Bumped by each registerSelf(), so an older deregisterSelf() result claims nothing. */
  generation: number;
  /** Per partition, since when this instance's own table has given it the partition. */
  tableSince: Map<number, number>;
  /**
   * Stalled while `close()` ran: the pause may have eaten `shutdownTimeoutMs`, and what is not
   * sent by the deadline cannot be promised (README, "Limits").
   */
  stalledClosing: boolean;
}

/**
 * One simulated world: several instances of the module (the providers `DiscoveryTestingModule`
 * assembles — self-registration, heartbeat, sharding, `DiscoveryService`'s lifecycle — each over
 * its own `SimTransport`) on one `SimConsul`, one virtual clock, fast-check's scheduler ordering every
 * answer, the scenario's faults, and the ownership rules (README "Sharding") checked after every answer and
 * every timer.
 */
export class SimWorld {
  readonly consul: SimConsul;
  readonly instances: Instance[] = [];
  private readonly random: () => number;
  private readonly runs: Run[] = [];
  private readonly lastStart = new Map<number, Run>();
  private readonly fenced = new Map<number, { token: number; episode: number }>();
  private readonly sessionOwners = new Map<string, Instance>();
  private episodes = 0;
  private writes = 0;
  private readonly stats = { advances: 0, answers: 0 };
  private violation?: Violation;
  private pending = new Set<Promise<unknown>>();

  constructor(
    private readonly scenario: Scenario,
    private readonly clock: SimClock,
    private readonly scheduler: Scheduler,
  ) {
    this.random = seededRandom(scenario.seed);
    this.consul = new SimConsul(clock, TTL_MS);
    clock.afterTimer = () => this.check();
    clock.tracksOwners = scenario.steps.some((step) => step.fault.kind === 'stall');
  }

  /** Plays the scenario; throws the first violation. */
  async play(): Promise<void> {
    for (const behaviour of this.scenario.behaviours) this.spawn(behaviour);
    await this.runFor(1_500);
    let faultsEnd = this.clock.now();
    for (const { waitMs, fault } of this.scenario.steps) {
      await this.runFor(waitMs);
      faultsEnd = Math.max(faultsEnd, this.apply(fault));
    }
    // Faults stop: the last one's effects end, then the bound runs.
    await this.runFor(Math.max(0, faultsEnd - this.clock.now()));
    this.healAll();
    const ignoring = this.instances.some((i) => i.behaviour === 'ignores');
    await this.runFor(CONVERGENCE_MS + (ignoring ? IGNORED_SIGNAL_MS : 0));
    this.checkConverged();
    await this.runFor(500);
    this.checkConverged();
    // SIGTERM to everyone still up; then Consul must not hold any of them, ever.
    for (const instance of this.instances) this.terminate(instance);
    await this.runFor(SHUTDOWN_TIMEOUT_MS + 500);
    for (const instance of this.instances) {
      if (instance.lifecycle === 'closing') this.fail(`${instance.id}: close() never resolved`);
    }
    await this.runFor(500);
    this.throwIfViolated();
    if (process.env.SIM_DEBUG) {
      process.stdout.write(
        `${JSON.stringify(this.scenario)}\n  runs ${this.runs.length}, ${JSON.stringify(this.stats)}, writes ${this.writes}, lifecycles ${this.instances.map((i) => i.lifecycle).join(',')}, t=${Math.round(this.clock.now())}\n`,
      );
    }
  }

  /**
   * Ends the world for good: Consul refuses every call and every instance is frozen, so no
   * continuation of this schedule arms a real timer once the fake clock is gone.
   */
  dispose(): void {
    for (const instance of this.instances) {
      this.clock.kill(instance.id);
      instance.transport.close();
    }
    this.consul.agent.close();
  }

  /** Moves the virtual clock by `ms`, delivering answers as the scheduler orders them. */
  private async runFor(ms: number): Promise<void> {
    const end = this.clock.now() + ms;
    for (;;) {
      await this.deliver();
      const now = this.clock.now();
      if (now >= end) break;
      const next = this.clock.nextDue() ?? end;
      // At least 1 ms: the fake clock rounds delays down and runs a 0 ms timer armed during a tick 1 ms later.
      this.stats.advances++;
      await this.clock.advance(Math.max(1, Math.ceil(Math.min(next, end) - now)));
      this.check();
      this.throwIfViolated();
    }
  }

  private async deliver(): Promise<void> {
    await settle();
    while (this.scheduler.count() > 0) {
      this.stats.answers++;
      await this.scheduler.waitOne();
      await settle();
      this.check();
      this.throwIfViolated();
    }
  }

  private spawn(behaviour: Behaviour): void {
    if (this.instances.length >= MAX_INSTANCES) return;
    const n = this.instances.length;
    const id = idOf(n);
    const transport = new SimTransport(id, this.consul, this.clock, this.scheduler, this.random);
    const instance: Instance = {
      id,
      behaviour,
      transport,
      handler: () => undefined,
      lifecycle: 'booting',
      mustBeAbsent: false,
      deregistering: false,
      generation: 0,
      tableSince: new Map(),
      stalledClosing: false,
    };
    instance.handler = this.handlerOf(instance);
    this.instances.push(instance);
    const settings = settingsOf(this.scenario, n);
    const app = new SimInjector([
      { provide: DISCOVERY_SETTINGS, useValue: settings },
      { provide: CONSUL_CLIENT, useValue: transport },
      ...discoveryCoreProviders,
    ]);
    this.track(
      this.clock.as(id, async () => {
        await app.init();
        const sharding = app.get<ShardingService>(ShardingService);
        instance.app = app;
        instance.sharding = sharding;
        instance.discovery = app.get(DiscoveryService);
        if (instance.lifecycle !== 'booting') return;
        instance.lifecycle = 'up';
        sharding.onPartition(instance.handler);
      }),
    );
  }

  /** Writes to the fenced store every 500 ms until aborted (or, ignoring it, long after). */
  private handlerOf(instance: Instance): PartitionHandler {
    return async (partition, { signal, token }) => {
      const run = this.started(instance, partition, token, signal);
      if (instance.behaviour === 'throws' && this.random() < 0.5) {
        throw new Error(`handler of ${partition} failed`);
      }
      let abortedAt: number | undefined;
      for (;;) {
        if (signal.aborted) {
          abortedAt ??= this.clock.now();
          if (instance.behaviour !== 'ignores') return;
          if (this.clock.now() - abortedAt >= IGNORES_FOR_MS) return;
        }
        this.write(run);
        await new Promise((resolve) => setTimeout(resolve, WRITE_EVERY_MS));
      }
    };
  }

  /** A run starts: its token must be above every earlier run's (exclusive). */
  private started(
    instance: Instance,
    partition: number,
    token: number | undefined,
    signal: AbortSignal,
  ): Run {
    const last = this.lastStart.get(partition);
    let episode = ++this.episodes;
    if (this.scenario.mode === 'exclusive') {
      if (token === undefined) this.fail(`${instance.id}: run of ${partition} without a token`);
      else if (last?.token !== undefined && token <= last.token) {
        const sameEpisode = this.runs.find(
          (r) =>
            r.instance === instance &&
            r.partition === partition &&
            r.token === token &&
            !r.signal.aborted,
        );
        if (token === last.token && sameEpisode) episode = sameEpisode.episode;
        else {
          this.fail(
            `run tokens of partition ${partition} must strictly increase: ${instance.id} started a run with token ${token} after ${last.instance.id}'s run with token ${last.token}`,
          );
        }
      }
    }
    const run: Run = { instance, partition, token, signal, episode };
    this.runs.push(run);
    this.lastStart.set(partition, run);
    return run;
  }

  /** The fenced store: refuses a token below the highest seen; the same token from two runs is a stale write. */
  private write(run: Run): void {
    this.writes++;
    if (run.token === undefined || run.instance.lifecycle === 'killed') return;
    const highest = this.fenced.get(run.partition);
    if (!highest || run.token > highest.token) {
      this.fenced.set(run.partition, { token: run.token, episode: run.episode });
    } else if (run.token === highest.token && run.episode !== highest.episode) {
      this.fail(
        `the fenced store accepted a stale write: partition ${run.partition}, token ${run.token}, from a second run of ${run.instance.id}`,
      );
    }
  }

  /** Applies a fault; returns when its effects end (virtual `performance.now()`). */
  private apply(fault: Fault): number {
    const now = this.clock.now();
    this.trace(`fault ${JSON.stringify(fault)}`);
    if (fault.kind === 'spawn') {
      this.spawn(fault.behaviour);
      return now;
    }
    const instance = this.instances[fault.who % this.instances.length];
    if (instance.lifecycle === 'killed') return now;
    const later = (ms: number, work: () => void): void => {
      this.clock.outside(() => setTimeout(work, ms));
    };
    switch (fault.kind) {
      case 'stall':
        if (instance.lifecycle === 'closing') instance.stalledClosing = true;
        this.clock.stall(instance.id);
        instance.tableSince.clear();
        later(fault.ms, () => this.clock.resume(instance.id));
        return now + fault.ms;
      case 'losePasses':
        instance.transport.net.losePassesUntil = now + fault.ms;
        return now + fault.ms;
      case 'slow':
        instance.transport.net.maxDelayMs = fault.delayMs;
        later(fault.ms, () => instance.transport.heal());
        return now + fault.ms + fault.delayMs;
      case 'invalidate': {
        const session = instance.transport.sessions.at(-1);
        if (session) this.consul.locks.destroySession(session);
        return now;
      }
      case 'agentRestart':
        this.consul.forget(instance.id);
        return now;
      case 'kill':
        instance.lifecycle = 'killed';
        this.clock.kill(instance.id);
        return now;
      case 'term':
        this.terminate(instance);
        return now + SHUTDOWN_TIMEOUT_MS;
      case 'flap':
        for (let i = 0; i < 2 * fault.times; i++) {
          later(i * fault.everyMs, () => this.consul.flap(instance.id, i % 2 === 0));
        }
        return now + 2 * fault.times * fault.everyMs;
      case 'deregister':
        this.deregister(instance);
        return now;
      case 'register':
        this.register(instance);
        return now;
      case 'doubleHandler':
        this.track(
          this.when(instance, () => {
            if (instance.lifecycle !== 'up') return;
            try {
              instance.sharding!.onPartition(instance.handler);
            } catch {
              // Rejecting the same function twice is allowed too: never a run nobody aborts.
            }
          }),
        );
        return now;
    }
  }

  private healAll(): void {
    for (const instance of this.instances) {
      instance.transport.heal();
      this.consul.flap(instance.id, false);
      this.clock.resume(instance.id);
    }
  }

  private terminate(instance: Instance): void {
    if (instance.lifecycle !== 'up' || !instance.app) return;
    instance.lifecycle = 'closing';
    const app = instance.app;
    // SIGTERM is handled when the process runs again (a stalled one, after its stall).
    this.track(
      this.when(instance, async () => {
        await app.close();
        // SIGKILL during close(): the process is gone, nothing was promised.
        if (instance.lifecycle === 'killed') return;
        instance.lifecycle = 'closed';
        instance.mustBeAbsent = !instance.stalledClosing;
        if (instance.stalledClosing)
          this.trace(`${instance.id}: stalled while closing, absence not claimed`);
        const unaborted = this.runs.filter((r) => r.instance === instance && !r.signal.aborted);
        if (unaborted.length > 0) {
          this.fail(
            `${instance.id}: close() resolved with runs nobody aborted (partitions ${unaborted.map((r) => r.partition).join(', ')})`,
          );
        }
        this.check();
      }),
    );
  }

  private deregister(instance: Instance): void {
    this.track(
      this.when(instance, async () => {
        if (instance.lifecycle !== 'up') return;
        const generation = instance.generation;
        instance.deregistering = true;
        const call = instance.discovery!.deregisterSelf();
        this.check();
        const gone = await call;
        if (gone && instance.generation === generation && instance.lifecycle === 'up') {
          instance.mustBeAbsent = true;
          this.check();
        }
      }),
    );
  }

  private register(instance: Instance): void {
    this.track(
      this.when(instance, async () => {
        if (instance.lifecycle !== 'up') return;
        instance.generation++;
        instance.mustBeAbsent = false;
        instance.deregistering = false;
        await instance.discovery!.registerSelf();
      }),
    );
  }

  /** The rules that hold at every instant. */
  check(): void {
    if (this.violation) return;
    const now = this.clock.now();
    for (const instance of this.instances) {
      if (instance.mustBeAbsent && this.consul.catalog.has(instance.id)) {
        this.fail(
          `${instance.id}: Consul holds the instance after ${instance.lifecycle === 'closed' ? 'close()' : 'deregisterSelf()'} resolved`,
        );
      }
    }
    if (this.scenario.mode === 'exclusive') {
      const owners = new Map<number, Instance>();
      for (const instance of this.instances) {
        if (instance.lifecycle === 'killed' || !instance.sharding) continue;
        for (const p of instance.sharding.owned()) {
          const other = owners.get(p);
          if (other) this.fail(`partition ${p}: owns() is true in ${other.id} and ${instance.id}`);
          owners.set(p, instance);
          if (instance.deregistering) {
            this.fail(`${instance.id}: owns(${p}) after deregisterSelf() was called`);
          }
        }
      }
    } else {
      for (let p = 0; p < this.scenario.partitions; p++) this.checkHandoff(p, now);
    }
  }

  /** Cooperative: a gained partition starts `handoffDelayMs` after the first table that gave it. */
  private checkHandoff(p: number, now: number): void {
    for (const instance of this.instances) {
      const sharding = instance.sharding;
      if (instance.lifecycle !== 'up' || !sharding || this.clock.frozen(instance.id)) {
        instance.tableSince.delete(p);
        continue;
      }
      if (sharding.ownerOf(p)?.serviceId !== instance.id) {
        instance.tableSince.delete(p);
        continue;
      }
      const since = instance.tableSince.get(p) ?? now;
      instance.tableSince.set(p, since);
      if (now - since > HANDOFF_DELAY_MS + HANDOFF_SLACK_MS && !sharding.owns(p)) {
        this.fail(
          `${instance.id}: partition ${p} has been its own in its table for ${Math.round(now - since)} ms but does not run (handoffDelayMs ${HANDOFF_DELAY_MS})`,
        );
      }
    }
  }

  /** Faults stopped long enough: every partition run by the table's owner alone, no idle lock. */
  private checkConverged(): void {
    const input = shardInput(this.consul.catalog.passing(SERVICE));
    const table = input && new ShardTable(input.members, input.options);
    const active = this.runs.filter((r) => !r.signal.aborted && r.instance.lifecycle !== 'killed');
    for (let p = 0; p < this.scenario.partitions; p++) {
      const ownerId = table?.ownerOf(p);
      const runners = [...new Set(active.filter((r) => r.partition === p).map((r) => r.instance))];
      const strangers = runners.filter((i) => i.id !== ownerId);
      if (strangers.length > 0) {
        this.fail(
          `converged: partition ${p} is run by ${strangers.map((i) => i.id).join(', ')}, not by its owner ${ownerId ?? '(none)'} alone`,
        );
      }
      const owner = this.instances.find((i) => i.id === ownerId);
      if (owner && owner.lifecycle === 'up' && runners.length === 0) {
        const holder = this.consul.locks
          .entries(`${LOCK_PREFIX}${p}`)
          .find((e) => e.key === `${LOCK_PREFIX}${p}`)?.session;
        const held =
          holder && owner.transport.sessions.includes(holder)
            ? ` (its session holds the lock: stranded)`
            : '';
        this.fail(`converged: partition ${p} is run by nobody; its owner is ${owner.id}${held}`);
      }
      if (owner && this.scenario.mode === 'exclusive' && owner.sharding?.owns(p) !== true) {
        this.fail(`converged: ${owner.id} owns the table's partition ${p} but owns(${p}) is false`);
      }
    }
    for (const entry of this.consul.locks.entries(LOCK_PREFIX)) {
      if (!entry.session) continue;
      const p = Number(entry.key.slice(LOCK_PREFIX.length));
      const holder = this.instances.find((i) => i.transport.sessions.includes(entry.session!));
      if (!holder || !active.some((r) => r.instance === holder && r.partition === p)) {
        this.fail(
          `converged: the lock of partition ${p} is held by ${holder?.id ?? 'an unknown session'} with no run (stranded lock)`,
        );
      }
    }
    this.throwIfViolated();
  }

  /** `SIM_TRACE=1`: what happened when, for reading a replayed schedule. */
  trace(line: string): void {
    if (process.env.SIM_TRACE) process.stdout.write(`${Math.round(this.clock.now())} ${line}\n`);
  }

  private fail(message: string): void {
    if (!this.violation && process.env.SIM_TRACE) {
      for (const i of this.instances) {
        this.trace(
          `${i.id} ${i.lifecycle} owned=[${i.sharding?.owned().join(',')}] sessions=${i.transport.sessions.length} registered=${this.consul.catalog.has(i.id)} passing=${this.consul.catalog.isPassing(i.id)}`,
        );
      }
      this.trace(`locks ${JSON.stringify(this.consul.locks.entries(LOCK_PREFIX))}`);
    }
    this.violation ??= new Violation(`${message} [at ${Math.round(this.clock.now())} ms]`);
  }

  private throwIfViolated(): void {
    if (this.violation) throw this.violation;
  }

  /** Runs `work` as the instance's code once it runs (at once unless stalled). */
  private async when<T>(instance: Instance, work: () => T | Promise<T>): Promise<T> {
    await this.clock.running(instance.id);
    return this.clock.as(instance.id, work);
  }

  private track(work: Promise<unknown>): void {
    const tracked = work
      .catch((error: unknown) => {
        if (!this.violation) this.fail(`an instance call failed: ${(error as Error).message}`);
      })
      .finally(() => this.pending.delete(tracked));
    this.pending.add(tracked);
  }
}

const settingsCache = new Map<string, DiscoverySettings>();

/**
 * Instance n's settings; validated once per shape (class-validator is the costliest part of a
 * schedule otherwise). The classes only read them.
 */
function settingsOf({ mode, partitions }: Scenario, n: number): DiscoverySettings {
  const key = `${mode}/${partitions}/${n}`;
  let settings = settingsCache.get(key);
  if (!settings) {
    settings = createDiscoverySettings(
      {
        service: { name: SERVICE, id: idOf(n), port: 5_000 + n, address: '127.0.0.1' },
        healthCheck: { ttl: `${TTL_MS}ms` },
        heartbeat: { intervalRatio: 0.3 },
        retry: { maxAttempts: 3, initialDelayMs: 50, maxDelayMs: 500 },
        shutdownTimeoutMs: SHUTDOWN_TIMEOUT_MS,
        watch: { waitTime: '10s' },
        sharding: {
          partitions,
          mode,
          settleMs: SETTLE_MS,
          handoffDelayMs: HANDOFF_DELAY_MS,
          drainTimeoutMs: DRAIN_TIMEOUT_MS,
          lock: { lockDelay: `${LOCK_DELAY_MS}ms` },
        },
      },
      {},
    );
    settingsCache.set(key, settings);
  }
  return settings;
}

const idOf = (n: number): string => `${SERVICE}-${String.fromCharCode(97 + n)}`;

/** Lets every microtask chain run (a real macrotask turn; the virtual clock does not move). */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
