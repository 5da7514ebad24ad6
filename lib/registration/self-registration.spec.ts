import { afterEach, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { CapturingLogger } from '../../test/support/capturing-logger.harness.js';
import type { ConsulClient } from '../consul/consul.client.js';
import type { AgentServiceDefinition } from '../consul/consul.types.js';
import { ConsulResponseError } from '../errors/consul-response.error.js';
import { DiscoverySettingsError } from '../errors/discovery-settings.error.js';
import { DiscoveryUnavailableError } from '../errors/discovery-unavailable.error.js';
import { ConsulRegistrar } from '../provider/consul.registrar.js';
import type { DiscoveryModuleOptions } from '../settings/discovery-module-options.interface.js';
import { createDiscoverySettings } from '../settings/discovery-settings.factory.js';
import {
  canTransition,
  REGISTRATION_STATES,
  type RegistrationState,
} from './registration-state.js';
import { SelfRegistration } from './self-registration.js';

// The state machine on fake timers. A real agent cannot hold a heartbeat pass in flight or fail
// on demand at an exact moment, so the ConsulClient is replaced by an in-memory agent with
// gates; everything above it (ConsulRegistrar's retries and backoff included) is the real code.

const TTL_MS = 3_000;
const BEAT_MS = TTL_MS / 3;
const ID = 'orders-1';

class Gate {
  private open?: () => void;
  private failWith?: (error: unknown) => void;
  readonly promise = new Promise<void>((resolve, reject) => {
    this.open = resolve;
    this.failWith = reject;
  });
  release(): void {
    this.open?.();
  }
  fail(error: unknown): void {
    this.failWith?.(error);
  }
}

/** The agent as the registrar sees it through ConsulClient: what it holds, what it was asked. */
class InMemoryAgent {
  readonly target = 'http://127.0.0.1:8500';
  readonly calls: string[] = [];
  holds = false;
  down = false;
  /** When set, the next call of that kind waits for the gate (a slow answer). */
  readonly gates: Partial<Record<'register' | 'deregister' | 'pass' | 'services', Gate>> = {};
  /** When set, the next registration lands at once but its answer waits for the gate. */
  heldAnswer?: Gate;
  private readonly lifetime = new AbortController();

  get closeSignal(): AbortSignal {
    return this.lifetime.signal;
  }

  count(kind: string): number {
    return this.calls.filter((c) => c === kind).length;
  }

  async registerService(definition: AgentServiceDefinition): Promise<void> {
    await this.enter('register');
    expect(definition.id).toBe(ID);
    this.holds = true;
    const answer = this.heldAnswer;
    this.heldAnswer = undefined;
    await answer?.promise;
  }

  async deregisterService(): Promise<void> {
    await this.enter('deregister');
    this.holds = false;
  }

  async passCheck(): Promise<void> {
    await this.enter('pass');
    if (!this.holds) {
      throw new ConsulResponseError(
        'agent.check.pass',
        500,
        `CheckID "service:${ID}" does not have associated TTL`,
      );
    }
  }

  async hasLocalService(): Promise<boolean> {
    await this.enter('services');
    return this.holds;
  }

  private async enter(kind: 'register' | 'deregister' | 'pass' | 'services'): Promise<void> {
    this.calls.push(kind);
    const gate = this.gates[kind];
    if (gate) {
      delete this.gates[kind];
      await gate.promise;
    }
    if (this.down) throw new DiscoveryUnavailableError('agent is down', 'ECONNREFUSED');
  }
}

describe('SelfRegistration', () => {
  let agent: InMemoryAgent;
  let logger: CapturingLogger;
  let registration: SelfRegistration;
  let states: RegistrationState[];

  function create(options: DiscoveryModuleOptions = {}): SelfRegistration {
    const settings = createDiscoverySettings(
      {
        service: { name: 'orders', id: ID, address: '127.0.0.1', port: 3000 },
        healthCheck: { ttl: `${TTL_MS}ms` },
        retry: { maxAttempts: 3, initialDelayMs: 100, maxDelayMs: 400 },
        ...options,
      },
      {},
    );
    const registrar = new ConsulRegistrar(agent as unknown as ConsulClient, settings);
    const created = new SelfRegistration(settings, registrar);
    states = [];
    created.state$.subscribe((state) => states.push(state));
    return created;
  }

  const advance = (ms: number): Promise<void> => jest.advanceTimersByTimeAsync(ms);
  /** Lets promise chains run without moving the clock. */
  const settle = (): Promise<void> => jest.advanceTimersByTimeAsync(0);

  beforeEach(() => {
    jest.useFakeTimers();
    agent = new InMemoryAgent();
    logger = new CapturingLogger();
    Logger.overrideLogger(logger);
    registration = create();
  });

  afterEach(async () => {
    const stopped = registration.stop(Date.now() + 1_000);
    await advance(1_000);
    await stopped;
    jest.useRealTimers();
    Logger.overrideLogger(new Logger());
  });

  describe('transition table', () => {
    const all: readonly RegistrationState[] = REGISTRATION_STATES;

    it('stopped is final and every state can reach stopped', () => {
      for (const to of all) expect(canTransition('stopped', to)).toBe(false);
      for (const from of all.filter((s) => s !== 'stopped')) {
        expect(canTransition(from, 'stopped')).toBe(true);
      }
    });

    it('registered is reached only through registering (or a failed deregistration)', () => {
      expect(all.filter((from) => canTransition(from, 'registered'))).toEqual([
        'registering',
        'deregistering',
      ]);
    });

    it('has no self-transitions', () => {
      for (const s of all) expect(canTransition(s, s)).toBe(false);
    });
  });

  it('boot: idle → registering → registered, then a pass every intervalRatio × ttl', async () => {
    await registration.boot();
    expect(states).toEqual(['idle', 'registering', 'registered']);
    expect(agent.holds).toBe(true);
    expect(logger.all()).toMatch(/Registered "orders-1" \(orders\) with Consul at http:\/\/127/);

    await advance(BEAT_MS - 1);
    expect(agent.count('pass')).toBe(0);
    await advance(1);
    expect(agent.count('pass')).toBe(1);
    await advance(4 * BEAT_MS);
    expect(agent.count('pass')).toBe(5);
  });

  it('self-repair: a pass answered "unknown check" registers again at once', async () => {
    await registration.boot();
    agent.holds = false; // the agent restarted empty
    await advance(BEAT_MS);
    expect(agent.calls.slice(-2)).toEqual(['pass', 'register']);
    expect(agent.holds).toBe(true);
    expect(registration.state).toBe('registered');
    expect(logger.all()).toMatch(/Consul lost "orders-1" \(agent restarted\?\); registering it/);
    await advance(BEAT_MS);
    expect(agent.calls.at(-1)).toBe('pass');
  });

  it('self-repair for an HTTP check: looks itself up every intervalRatio × interval', async () => {
    registration = create({
      healthCheck: { http: 'http://127.0.0.1:3000/health', interval: '3s' },
    });
    await registration.boot();
    await advance(BEAT_MS);
    expect(agent.calls).toEqual(['register', 'services']);
    agent.holds = false;
    await advance(BEAT_MS);
    expect(agent.calls).toEqual(['register', 'services', 'services', 'register']);
    expect(agent.holds).toBe(true);
  });

  it('a failing heartbeat is logged once per outage and keeps beating', async () => {
    await registration.boot();
    agent.down = true;
    await advance(3 * BEAT_MS);
    expect(agent.count('pass')).toBe(3);
    expect(
      logger.lines('warn').filter((l) => /Heartbeat of "orders-1" failed/.test(l)),
    ).toHaveLength(1);
    agent.down = false;
    await advance(BEAT_MS);
    expect(logger.all()).toMatch(/Heartbeat of "orders-1" recovered/);
    expect(registration.state).toBe('registered');
  });

  it('deregister: registered → deregistering → deregistered, and no beat afterwards', async () => {
    await registration.boot();
    await expect(registration.deregister()).resolves.toBe(true);
    expect(states).toEqual(['idle', 'registering', 'registered', 'deregistering', 'deregistered']);
    expect(agent.holds).toBe(false);
    const calls = agent.calls.length;
    await advance(20 * BEAT_MS);
    expect(agent.calls.length).toBe(calls);
  });

  it('the race: deregister() while a pass is in flight waits for it, and nothing re-registers', async () => {
    await registration.boot();
    const slowPass = new Gate();
    agent.gates.pass = slowPass;
    await advance(BEAT_MS);
    expect(agent.calls.at(-1)).toBe('pass'); // in flight

    const deregistered = registration.deregister();
    await settle();
    expect(registration.state).toBe('registered'); // waiting for the beat
    expect(agent.count('deregister')).toBe(0);

    slowPass.release();
    await expect(deregistered).resolves.toBe(true);
    expect(agent.calls.slice(-2)).toEqual(['pass', 'deregister']);
    expect(registration.state).toBe('deregistered');

    const calls = agent.calls.length;
    await advance(20 * BEAT_MS);
    expect(agent.calls.length).toBe(calls);
    expect(agent.holds).toBe(false);
    expect(logger.all()).not.toMatch(/registering it again/);
  });

  it('the race, agent restarted too: a pass answered "unknown check" during deregister() does not repair', async () => {
    await registration.boot();
    agent.holds = false;
    const slowPass = new Gate();
    agent.gates.pass = slowPass;
    await advance(BEAT_MS);
    const deregistered = registration.deregister();
    slowPass.release();
    await expect(deregistered).resolves.toBe(true);
    await advance(20 * BEAT_MS);
    expect(agent.count('register')).toBe(1);
    expect(agent.holds).toBe(false);
  });

  it('deregister() waits for a self-repair in flight and then removes what it registered', async () => {
    await registration.boot();
    agent.holds = false;
    const slowRepair = new Gate();
    agent.gates.register = slowRepair;
    await advance(BEAT_MS);
    expect(agent.calls.slice(-2)).toEqual(['pass', 'register']); // repair in flight
    const deregistered = registration.deregister();
    await settle();
    expect(agent.count('deregister')).toBe(0);
    slowRepair.release();
    await expect(deregistered).resolves.toBe(true);
    expect(agent.holds).toBe(false);
    await advance(20 * BEAT_MS);
    expect(agent.holds).toBe(false);
  });

  it('register() after deregister() is back, heartbeating', async () => {
    await registration.boot();
    await registration.deregister();
    await expect(registration.register()).resolves.toBe(true);
    expect(states.slice(-3)).toEqual(['deregistered', 'registering', 'registered']);
    const passes = agent.count('pass');
    await advance(2 * BEAT_MS);
    expect(agent.count('pass')).toBe(passes + 2);
  });

  it('register() then deregister(), called together: ends deregistered, no beat', async () => {
    await registration.boot();
    await registration.deregister();
    const [registered, deregistered] = await Promise.all([
      registration.register(),
      registration.deregister(),
    ]);
    expect(agent.calls.slice(-2)).toEqual(['register', 'deregister']);
    expect([registered, deregistered]).toEqual([true, true]);
    expect(registration.state).toBe('deregistered');
    expect(agent.holds).toBe(false);
    const calls = agent.calls.length;
    await advance(20 * BEAT_MS);
    expect(agent.calls.length).toBe(calls);
  });

  it('deregister() then register(), called together: ends registered and heartbeating', async () => {
    await registration.boot();
    const [deregistered, registered] = await Promise.all([
      registration.deregister(),
      registration.register(),
    ]);
    expect([deregistered, registered]).toEqual([true, true]);
    expect(agent.calls.slice(-2)).toEqual(['deregister', 'register']);
    expect(registration.state).toBe('registered');
    expect(agent.holds).toBe(true);
    const passes = agent.count('pass');
    await advance(BEAT_MS);
    expect(agent.count('pass')).toBe(passes + 1);
  });

  it('deregister() stops the retries of a register() in progress; register() resolves false', async () => {
    agent.down = true;
    const registered = registration.register();
    await settle();
    expect(agent.count('register')).toBe(1); // now waiting in backoff
    agent.down = false;
    const deregistered = registration.deregister();
    await advance(1_000);
    await expect(registered).resolves.toBe(false);
    await expect(deregistered).resolves.toBe(true);
    expect(agent.count('register')).toBe(1);
    expect(registration.state).toBe('deregistered');
    expect(logger.all()).toMatch(/superseded/);
  });

  it('a failed deregister() resolves false and keeps the instance registered and heartbeating', async () => {
    await registration.boot();
    agent.down = true;
    const deregistered = registration.deregister();
    await advance(2_000); // the retries
    await expect(deregistered).resolves.toBe(false);
    expect(agent.count('deregister')).toBe(3);
    expect(registration.state).toBe('registered');
    agent.down = false;
    const passes = agent.count('pass');
    await advance(BEAT_MS);
    expect(agent.count('pass')).toBe(passes + 1);
  });

  it('a failed register() falls back to where it started', async () => {
    agent.down = true;
    const registered = registration.register();
    await advance(2_000);
    await expect(registered).resolves.toBe(false);
    expect(states).toEqual(['idle', 'registering', 'idle']);
    expect(agent.count('register')).toBe(3);
  });

  it('boot without failFast: one attempt, then background retries until the agent is up', async () => {
    agent.down = true;
    await registration.boot();
    expect(logger.lines('warn').join('\n')).toMatch(/orders-1.*retrying in the background/);
    await settle();
    expect(registration.state).toBe('registering');
    await advance(5_000);
    expect(agent.count('register')).toBeGreaterThan(3);
    agent.down = false;
    await advance(1_000);
    expect(registration.state).toBe('registered');
    expect(agent.holds).toBe(true);
  });

  it('boot with failFast: rejects after retry.maxAttempts with the cause, no background', async () => {
    registration = create({ retry: { maxAttempts: 3, initialDelayMs: 100, failFast: true } });
    agent.down = true;
    const booted = registration.boot();
    const failed = expect(booted).rejects.toBeInstanceOf(DiscoveryUnavailableError);
    await advance(2_000);
    await failed;
    expect(agent.count('register')).toBe(3);
    await advance(20_000);
    expect(agent.count('register')).toBe(3);
    expect(registration.state).toBe('idle');
  });

  it('stop(): deregisters, ends stopped, and refuses to register again', async () => {
    await registration.boot();
    await registration.stop(Date.now() + 1_000);
    expect(logger.all()).toMatch(/Deregistered "orders-1"/);
    expect(states.slice(-3)).toEqual(['registered', 'deregistering', 'stopped']);
    expect(agent.holds).toBe(false);
    await expect(registration.register()).resolves.toBe(false);
    expect(agent.count('register')).toBe(1);
    await advance(20 * BEAT_MS);
    expect(agent.calls.at(-1)).toBe('deregister');
  });

  it('stop() while a pass is in flight: waits for it, deregisters, never repairs', async () => {
    await registration.boot();
    agent.holds = false;
    const slowPass = new Gate();
    agent.gates.pass = slowPass;
    await advance(BEAT_MS);
    const stopped = registration.stop(Date.now() + 5_000);
    slowPass.release();
    await stopped;
    expect(agent.calls).toEqual(['register', 'pass', 'deregister']);
    expect(registration.state).toBe('stopped');
  });

  it('stop() ends the background retries; a late landing changes nothing', async () => {
    agent.down = true;
    await registration.boot();
    const slowAttempt = new Gate();
    await advance(1_000);
    agent.gates.register = slowAttempt;
    await advance(1_000); // an attempt is now held by the agent
    const attempts = agent.count('register');
    agent.down = false;
    const stopped = registration.stop(Date.now() + 100);
    await advance(200);
    await stopped;
    expect(registration.state).toBe('stopped');
    slowAttempt.release(); // the attempt lands on the agent after stop() resolved
    await advance(20_000);
    expect(agent.count('register')).toBe(attempts);
    expect(registration.state).toBe('stopped');
    expect(agent.holds).toBe(false);
    expect(agent.calls.at(-1)).toBe('deregister');
  });

  it('stop() while a registration landed but its answer is held: deregistered by the deadline', async () => {
    registration = create({ autoRegister: false });
    const answer = (agent.heldAnswer = new Gate());
    const registering = registration.register();
    await settle();
    expect(agent.holds).toBe(true); // landed; the answer has not come back
    expect(registration.state).toBe('registering');
    const stopped = registration.stop(Date.now() + 1_000);
    await advance(1_000);
    await stopped;
    expect(registration.state).toBe('stopped');
    expect(agent.holds).toBe(false);
    answer.release(); // the answer comes back after stop() resolved: the caller is told it failed
    await expect(registering).resolves.toBe(false);
    await advance(20_000);
    expect(agent.holds).toBe(false);
  });

  it('stop() while a self-repair is in flight: its late landing is deregistered', async () => {
    await registration.boot();
    agent.holds = false; // the agent restarted empty: the next pass answers "unknown check"
    const repair = new Gate();
    agent.gates.register = repair;
    await advance(BEAT_MS);
    expect(agent.calls.slice(-2)).toEqual(['pass', 'register']); // the repair waits on the agent
    const stopped = registration.stop(Date.now() + 1_000);
    await advance(1_000);
    await stopped;
    repair.release(); // lands after shutdown deregistered
    await advance(5_000);
    expect(agent.holds).toBe(false);
    expect(agent.calls.at(-1)).toBe('deregister');
    expect(registration.state).toBe('stopped');
  });

  it('stop() keeps its deadline when the agent does not answer the deregistration', async () => {
    await registration.boot();
    agent.gates.deregister = new Gate();
    const started = Date.now();
    const stopped = registration.stop(started + 1_500);
    await advance(1_500);
    await stopped;
    expect(Date.now() - started).toBe(1_500);
    expect(registration.state).toBe('stopped');
    expect(logger.all()).toMatch(/Could not deregister "orders-1" within shutdownTimeoutMs/);
  });

  it('without service settings: register() and deregister() reject with DiscoverySettingsError', async () => {
    registration = create({ autoRegister: false, service: undefined });
    await expect(registration.register()).rejects.toBeInstanceOf(DiscoverySettingsError);
    await expect(registration.deregister()).rejects.toBeInstanceOf(DiscoverySettingsError);
    expect(() => registration.self).toThrow(DiscoverySettingsError);
    expect(agent.calls).toEqual([]);
  });
});
