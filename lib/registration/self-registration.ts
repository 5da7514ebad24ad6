import { Inject, Injectable, Logger, Optional } from '@nestjs/common';
import { BehaviorSubject, Subject, type Observable } from 'rxjs';
import type { RegistrationFields } from '../consul/agent-definition.js';
import type { LocalCheck } from '../consul/consul.client.js';
import { DISCOVERY_SETTINGS } from '../discovery.constants.js';
import { DiscoverySettingsError } from '../errors/discovery-settings.error.js';
import { DiscoveryUnavailableError } from '../errors/discovery-unavailable.error.js';
import {
  registrationStoppedMessage,
  registrationSupersededMessage,
  selfNotConfiguredMessage,
} from '../errors/error-messages.js';
import { IllegalTransitionError } from '../errors/illegal-transition.error.js';
import { consulOutcome } from '../metrics/consul-outcome.js';
import { DiscoveryMetrics } from '../metrics/discovery.metrics.js';
import type { ServiceRegistration } from '../protocol/service-discovery.protocol.js';
import { ConsulRegistrar } from '../provider/consul.registrar.js';
import { withDeadline } from '../resilience/with-deadline.js';
import { DiscoverySettings } from '../settings/discovery.settings.js';
import type { HealthCheckSettings } from '../protocol/health-check.rules.js';
import { heartbeatMs } from '../protocol/lease.rules.js';
import { Heartbeat } from './heartbeat.js';
import {
  canTransition,
  REGISTRATION_STATES,
  type RegistrationState,
  type SettledState,
} from './registration-state.js';
import { selfStatus, type SelfStatus } from './registration-status.js';

/** This instance's registration: always with a health check (the settings default one). */
export interface SelfFields extends RegistrationFields {
  healthCheck: HealthCheckSettings;
}

/** One register or deregister in progress; a later one aborts it (between attempts) and waits. */
interface Write {
  readonly controller: AbortController;
  done: Promise<void>;
}

/**
 * This instance's registration with Consul as an explicit state machine
 * (see `registration-state.ts`): register (at boot, in the background, or on request),
 * heartbeat + self-repair while `registered`, deregister, and `stopped` at shutdown.
 *
 * Writes run one at a time: a new one stops the retries of the one before, waits for it and for a
 * heartbeat in flight, and only then goes on, so whatever was called last decides what Consul
 * holds. The heartbeat re-arms only while `registered` with no write pending, so nothing
 * re-registers an instance after `deregister()` succeeded until `register()` is called.
 */
@Injectable()
export class SelfRegistration {
  private readonly logger = new Logger(SelfRegistration.name);
  private readonly fields?: SelfFields;
  private readonly states = new BehaviorSubject<RegistrationState>('idle');
  /** Where a failed or superseded write falls back to. */
  private settled: SettledState = 'idle';
  private write?: Write;
  private stopping?: Promise<void>;
  private readonly heartbeat: Heartbeat;
  private heartbeatFailing = false;
  private readonly passes = new Subject<number>();
  private readonly losses = new Subject<void>();
  private lastPass?: number;

  constructor(
    @Inject(DISCOVERY_SETTINGS) private readonly settings: DiscoverySettings,
    private readonly registrar: ConsulRegistrar,
    @Optional() private readonly metrics: DiscoveryMetrics = DiscoveryMetrics.noop,
  ) {
    const { service, healthCheck, sharding } = settings;
    if (service.name !== undefined && service.port !== undefined && service.id !== undefined) {
      this.fields = {
        name: service.name,
        serviceId: service.id,
        port: service.port,
        address: service.address,
        tags: service.tags,
        // Every instance, and any caller, computes the shard table from the membership alone.
        meta: sharding
          ? {
              ...service.meta,
              shardPartitions: String(sharding.partitions),
              shardBalance: String(sharding.balanceFactor),
              shardWeight: String(sharding.weight),
            }
          : service.meta,
        healthCheck,
      };
      metrics.observeRegistration(REGISTRATION_STATES, () => this.state);
    }
    const periodMs = 'ttl' in healthCheck ? healthCheck.ttlMs : healthCheck.intervalMs;
    this.heartbeat = new Heartbeat(
      heartbeatMs(periodMs, settings.heartbeat.intervalRatio),
      () => this.beat(),
      () => this.beating(),
    );
  }

  get state(): RegistrationState {
    return this.states.value;
  }

  /** The current state at once, then every change. */
  get state$(): Observable<RegistrationState> {
    return this.states.asObservable();
  }

  /**
   * When Consul last confirmed the TTL check passing (a pass, or a registration starting it
   * passing), as `performance.now()` of the moment the request was sent: the lease the agent
   * measures began no earlier. `undefined` before the first.
   */
  get lastPassAt(): number | undefined {
    return this.lastPass;
  }

  /** Each confirmed pass (its `lastPassAt`). */
  get passed$(): Observable<number> {
    return this.passes.asObservable();
  }

  /**
   * The agent no longer held the registration (restarted and lost its state): whatever was
   * bound to it there — a session, its locks — is gone too. Emitted before re-registering.
   */
  get lost$(): Observable<void> {
    return this.losses.asObservable();
  }

  /** This instance's registration as sent to Consul (a copy). */
  get self(): ServiceRegistration {
    const r = this.requireFields();
    const self: ServiceRegistration = {
      name: r.name,
      serviceId: r.serviceId,
      port: r.port,
      tags: [...r.tags],
      meta: { ...r.meta },
      healthCheck: { ...r.healthCheck },
    };
    if (r.address !== undefined) self.address = r.address;
    return self;
  }

  /** This instance's id; `undefined` when no service is configured. */
  get serviceId(): string | undefined {
    return this.fields?.serviceId;
  }

  /**
   * Where the registration stands, given whether the agent holds it (`undefined`: the read
   * failed); `undefined` when no service is configured.
   */
  status(held: boolean | undefined, checks?: readonly LocalCheck[]): SelfStatus | undefined {
    const r = this.fields;
    if (!r) return undefined;
    return selfStatus({
      serviceId: r.serviceId,
      state: this.state,
      held,
      lastPassAt: this.lastPass,
      ttlMs: 'ttl' in r.healthCheck ? r.healthCheck.ttlMs : undefined,
      checks,
      now: performance.now(),
    });
  }

  /**
   * Bootstrap: `failFast` retries `retry.maxAttempts` times and rejects with the last cause;
   * otherwise one attempt, then retries in the background without limit.
   */
  async boot(): Promise<void> {
    const r = this.requireFields();
    const { maxAttempts, failFast } = this.settings.retry;
    if (failFast) return this.registerOrThrow({ attempts: maxAttempts });
    try {
      await this.registerOrThrow({ attempts: 1 });
    } catch (error) {
      this.logger.warn(
        `Registration of "${r.serviceId}" failed, retrying in the background: ${(error as Error).message}`,
      );
      this.registerOrThrow({ attempts: Infinity, retryRefusals: true }).catch((cause: unknown) => {
        if (!this.stopping && !isSuperseded(cause)) {
          this.logger.error(
            `Registration of "${r.serviceId}" stopped: ${(cause as Error).message}`,
          );
        }
      });
    }
  }

  /** Registers (TTL check starting passing) with `retry.maxAttempts`; `false` when it failed. */
  async register(): Promise<boolean> {
    const r = this.requireFields();
    try {
      await this.registerOrThrow({ attempts: this.settings.retry.maxAttempts });
      return true;
    } catch (error) {
      this.logger.warn(`Could not register "${r.serviceId}": ${(error as Error).message}`);
      return false;
    }
  }

  /** Deregisters (already gone counts); `true` = gone, and it stays gone until `register()`. */
  async deregister(): Promise<boolean> {
    const r = this.requireFields();
    try {
      await this.run('deregistering', 'deregistered', () => this.registrar.deregister(r.serviceId));
      this.logger.log(`Deregistered "${r.serviceId}"`);
      return true;
    } catch (error) {
      this.logger.warn(`Could not deregister "${r.serviceId}": ${(error as Error).message}`);
      return false;
    }
  }

  /**
   * Shutdown, by `deadline` (a `Date.now()` value): stops retries and the heartbeat, lets a write
   * or beat in flight land, deregisters when registered, and ends in `stopped`. Idempotent.
   */
  stop(deadline: number): Promise<void> {
    this.stopping ??= this.shutDown(deadline);
    return this.stopping;
  }

  private async shutDown(deadline: number): Promise<void> {
    const previous = this.supersede();
    // A write or beat in flight gets half of what remains; the rest is for deregistering.
    await withDeadline(
      Promise.allSettled([previous?.done, this.heartbeat.idle()]),
      (deadline - Date.now()) / 2,
    );
    const r = this.fields;
    // Registered, or a write still unanswered that may have landed on the agent: deregister.
    const state = this.state;
    if (r && (state === 'registered' || state === 'registering' || state === 'deregistering')) {
      if (state !== 'deregistering') this.transition('deregistering');
      const gone = await withDeadline(
        this.registrar.deregister(r.serviceId).then(() => true),
        deadline - Date.now(),
      );
      if (gone) this.logger.log(`Deregistered "${r.serviceId}"`);
      else this.logger.warn(`Could not deregister "${r.serviceId}" within shutdownTimeoutMs`);
    }
    this.transition('stopped');
  }

  private registerOrThrow(options: { attempts: number; retryRefusals?: boolean }): Promise<void> {
    const r = this.requireFields();
    return this.run('registering', 'registered', async (signal) => {
      // The attempt that lands is the last one; its send time is after this one.
      const sentAt = performance.now();
      await this.registrar.register(r, true, { ...options, signal });
      this.passedAt(sentAt);
      this.logger.log(
        `Registered "${r.serviceId}" (${r.name}) with Consul at ${this.registrar.target}`,
      );
    });
  }

  /**
   * Runs one write after the one before it and after a heartbeat in flight, in call order; a
   * later write only cuts this one's retries short (each gets its attempt). Success moves to
   * `to`, also when a later write is waiting (it did land, and the later write goes on from
   * there); failure falls back to the last settled state.
   */
  private async run(
    during: 'registering' | 'deregistering',
    to: SettledState,
    work: (signal: AbortSignal) => Promise<void>,
  ): Promise<void> {
    const r = this.requireFields();
    if (this.stopping) {
      throw new DiscoveryUnavailableError(registrationStoppedMessage(r.serviceId), 'ESTOPPED');
    }
    const previous = this.supersede();
    const write: Write = { controller: new AbortController(), done: Promise.resolve() };
    this.write = write;
    write.done = (async () => {
      await previous?.done.catch(() => undefined);
      await this.heartbeat.idle();
      if (this.stopping) {
        throw new DiscoveryUnavailableError(registrationStoppedMessage(r.serviceId), 'ESTOPPED');
      }
      this.transition(during);
      try {
        await work(write.controller.signal);
      } catch (error) {
        this.finish(write, this.settled);
        throw write.controller.signal.aborted ? superseded(r.serviceId) : error;
      }
      if (to === 'registered' && this.landedLate()) {
        this.undoLateLanding(r.serviceId);
        throw new DiscoveryUnavailableError(registrationStoppedMessage(r.serviceId), 'ESTOPPED');
      }
      this.finish(write, to);
    })();
    return write.done;
  }

  /** Aborts the write in progress (its retries stop; an attempt in flight completes). */
  private supersede(): Write | undefined {
    const previous = this.write;
    previous?.controller.abort();
    this.write = undefined;
    this.heartbeat.stop();
    return previous;
  }

  private finish(write: Write, to: SettledState): void {
    if (this.write === write) this.write = undefined;
    // A write that lands after shutdown gave up waiting for it changes no state any more.
    if (this.landedLate()) return;
    this.settled = to;
    this.transition(to);
  }

  private transition(to: RegistrationState): void {
    const from = this.state;
    if (!canTransition(from, to)) throw new IllegalTransitionError(from, to);
    this.states.next(to);
    if (this.beating()) this.heartbeat.start();
    else this.heartbeat.stop();
  }

  /** The heartbeat runs only while registered with no write pending and no shutdown begun. */
  private beating(): boolean {
    return this.state === 'registered' && !this.write && !this.stopping;
  }

  /**
   * A TTL pass, or (HTTP/TCP check) a look at the agent's local services. When the agent no
   * longer holds the registration (restarted empty), it is registered again at once. Never
   * rejects: failures are logged once per outage, and the next beat is the retry.
   */
  private async beat(): Promise<void> {
    const r = this.requireFields();
    let alive: boolean;
    const sentAt = performance.now();
    try {
      alive = await this.registrar.heartbeat(r);
      if (alive && 'ttl' in r.healthCheck) this.passedAt(sentAt);
      if (this.heartbeatFailing) this.logger.log(`Heartbeat of "${r.serviceId}" recovered`);
      this.heartbeatFailing = false;
    } catch (error) {
      if (this.beating()) this.metrics.heartbeatFailed(consulOutcome(error));
      if (this.beating() && !this.heartbeatFailing) {
        this.logger.warn(`Heartbeat of "${r.serviceId}" failed: ${(error as Error).message}`);
      }
      this.heartbeatFailing = true;
      return;
    }
    // A deregistration (or shutdown) that began while the pass was in flight wins.
    if (alive || !this.beating()) return;
    this.logger.warn(`Consul lost "${r.serviceId}" (agent restarted?); registering it again`);
    this.losses.next();
    this.metrics.heartbeatFailed('lost');
    try {
      const repairSentAt = performance.now();
      await this.registrar.register(r, true, { attempts: 1 });
      if (this.landedLate()) return this.undoLateLanding(r.serviceId);
      this.passedAt(repairSentAt);
    } catch (error) {
      this.logger.warn(`Re-registration of "${r.serviceId}" failed: ${(error as Error).message}`);
    }
  }

  /**
   * Shutdown gave up waiting for what is landing now and went on to deregister (or is done):
   * whatever this answer says, the instance must not stay in the catalog.
   */
  private landedLate(): boolean {
    return (
      this.stopping !== undefined && (this.state === 'deregistering' || this.state === 'stopped')
    );
  }

  /** Deregisters a registration that landed after shutdown went on: one attempt, never rejects. */
  private undoLateLanding(serviceId: string): void {
    this.logger.warn(
      `A registration of "${serviceId}" landed after shutdown began; deregistering it`,
    );
    this.registrar.deregister(serviceId, { attempts: 1 }).then(
      () => this.logger.log(`Deregistered "${serviceId}" (late registration)`),
      (error: unknown) =>
        this.logger.warn(
          `Could not deregister the late registration of "${serviceId}": ${(error as Error).message}`,
        ),
    );
  }

  private passedAt(sentAt: number): void {
    this.lastPass = sentAt;
    this.passes.next(sentAt);
  }

  private requireFields(): SelfFields {
    if (!this.fields) {
      throw new DiscoverySettingsError([
        { path: 'service.name', reasons: [selfNotConfiguredMessage()] },
      ]);
    }
    return this.fields;
  }
}

const SUPERSEDED = 'ESUPERSEDED';

function superseded(serviceId: string): DiscoveryUnavailableError {
  return new DiscoveryUnavailableError(registrationSupersededMessage(serviceId), SUPERSEDED);
}

function isSuperseded(error: unknown): boolean {
  return error instanceof DiscoveryUnavailableError && error.code === SUPERSEDED;
}
