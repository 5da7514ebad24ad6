import { Logger, type OnApplicationShutdown } from '@nestjs/common';
import { consulOutcome, type ConsulOutcome } from './consul-outcome.js';
import { loadMetricsApi, type LoadedMetricsApi } from './metrics-api.loader.js';
import type {
  CounterInstrument,
  HistogramInstrument,
  MetricAttributes,
  MetricsApi,
  ObservableInstrument,
  ObservationCallback,
} from './metrics-api.types.js';

/** The meter every instrument belongs to. */
export const METER_NAME = '@athomic/discovery';

/** What the staleness gauge reads of a watch (`ServiceWatch` fits). */
export interface WatchedSet {
  readonly name: string;
  readonly query: { tag?: string; datacenter?: string };
  readonly freshness: { updatedAt: Date; stale: boolean } | undefined;
}

/** This instance, as its self-scoped points name it (absent when `service.*` is not configured). */
export interface MetricsSelf {
  name?: string;
  serviceId?: string;
}

const SECONDS_BUCKETS = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
];

/**
 * Every instrument of the library (README "Metrics"), through `@opentelemetry/api` when it is
 * installed: without a registered SDK its meter is a no-op; without the package nothing is
 * recorded at all. The meter is resolved when this object is created (at module init), so an SDK
 * registered before the Nest app is used. One per module instance, passed in by DI, so tests and
 * several apps in one process stay apart; its observable callbacks end with the app.
 */
export class DiscoveryMetrics implements OnApplicationShutdown {
  /** Records nothing: the default of classes built by hand (outside DI). */
  static readonly noop = new DiscoveryMetrics();

  private readonly self: MetricAttributes = {};
  /** Without the API nothing reads the sources: they are not kept (`noop` is shared). */
  private readonly live: boolean;
  private readonly heartbeatFailures?: CounterInstrument;
  private readonly consulDuration?: HistogramInstrument;
  private readonly handoffDuration?: HistogramInstrument;
  private readonly picks?: CounterInstrument;
  private readonly retries?: CounterInstrument;
  private readonly ejections?: CounterInstrument;
  private readonly jobFires?: CounterInstrument;
  private readonly jobLateness?: HistogramInstrument;
  private readonly observers: [ObservableInstrument, ObservationCallback][] = [];
  private registration?: { states: readonly string[]; current: () => string };
  private partitions?: { mode: string; owned: () => number };
  private watches?: () => Iterable<WatchedSet>;

  /** From the installed API, if any; a broken install is logged and turns metrics off. */
  static create(self: MetricsSelf, loaded: LoadedMetricsApi = loadMetricsApi()): DiscoveryMetrics {
    if (loaded.failure) {
      new Logger(DiscoveryMetrics.name).warn(
        `@opentelemetry/api could not be loaded, metrics are off: ${loaded.failure.message}`,
      );
    }
    return new DiscoveryMetrics(loaded.api, self);
  }

  constructor(
    api?: MetricsApi,
    self: MetricsSelf = {},
    private readonly now: () => number = Date.now,
  ) {
    if (self.name !== undefined) this.self['discovery.service.name'] = self.name;
    if (self.serviceId !== undefined) this.self['discovery.service.id'] = self.serviceId;
    this.live = api !== undefined;
    if (!api) return;
    const meter = api.getMeter(METER_NAME);
    this.heartbeatFailures = meter.createCounter('discovery.heartbeat.failures', {
      description: 'Heartbeats of this instance that did not confirm its registration',
      unit: '{failure}',
    });
    this.consulDuration = meter.createHistogram('discovery.consul.request.duration', {
      description: 'Duration of each HTTP request to the Consul agent (long-polls included)',
      unit: 's',
      advice: { explicitBucketBoundaries: SECONDS_BUCKETS },
    });
    this.handoffDuration = meter.createHistogram('discovery.sharding.handoff.duration', {
      description: 'From a membership change this instance saw to its owning a partition it gained',
      unit: 's',
      advice: { explicitBucketBoundaries: SECONDS_BUCKETS },
    });
    this.picks = meter.createCounter('discovery.http.picks', {
      description: 'Instances picked for an attempt of a call by service name',
      unit: '{pick}',
    });
    this.retries = meter.createCounter('discovery.http.retries', {
      description: 'Attempts retried on another instance',
      unit: '{retry}',
    });
    this.ejections = meter.createCounter('discovery.http.ejections', {
      description: 'Instances ejected by passive outlier detection',
      unit: '{ejection}',
    });
    this.jobFires = meter.createCounter('discovery.jobs.fires', {
      description: 'Scheduled instants of cluster jobs by outcome: run, late, skipped or failed',
      unit: '{fire}',
    });
    this.jobLateness = meter.createHistogram('discovery.jobs.lateness', {
      description: 'How long after its scheduled instant a late run of a cluster job started',
      unit: 's',
      advice: { explicitBucketBoundaries: SECONDS_BUCKETS },
    });
    this.observe(
      meter.createObservableUpDownCounter('discovery.registration.status', {
        description: 'Self-registration state: 1 for the current state, 0 for the others',
        unit: '{registration}',
      }),
      (result) => {
        if (!this.registration) return;
        const current = this.registration.current();
        for (const state of this.registration.states) {
          const attributes = { ...this.self, 'discovery.registration.state': state };
          result.observe(state === current ? 1 : 0, attributes);
        }
      },
    );
    this.observe(
      meter.createObservableGauge('discovery.watch.staleness', {
        description: 'Seconds since a watched set was last confirmed by Consul (0 while fresh)',
        unit: 's',
      }),
      (result) => {
        for (const watch of this.watches?.() ?? []) {
          const seconds = this.staleness(watch);
          if (seconds !== undefined) result.observe(seconds, watchAttributes(watch));
        }
      },
    );
    this.observe(
      meter.createObservableUpDownCounter('discovery.sharding.partitions.owned', {
        description: 'Partitions this instance owns now',
        unit: '{partition}',
      }),
      (result) => {
        if (!this.partitions) return;
        const attributes = { ...this.self, 'discovery.sharding.mode': this.partitions.mode };
        result.observe(this.partitions.owned(), attributes);
      },
    );
  }

  /** Self-registration: `current()` is read at each collection, `states` all report. */
  observeRegistration(states: readonly string[], current: () => string): void {
    if (this.live) this.registration = { states, current };
  }

  /** A beat that failed (how its request ended), or found the registration `lost`. */
  heartbeatFailed(errorType: ConsulOutcome | 'lost'): void {
    this.heartbeatFailures?.add(1, { ...this.self, 'error.type': errorType });
  }

  /** One HTTP request to Consul that began at `startedAt` (`performance.now()`); no error = success. */
  consulRequest(operation: string, blocking: boolean, startedAt: number, error?: unknown): void {
    this.consulDuration?.record((performance.now() - startedAt) / 1000, {
      'discovery.consul.operation': operation,
      'discovery.consul.outcome': consulOutcome(error),
      'discovery.consul.blocking': blocking,
    });
  }

  /** The live watches, read at each collection. */
  observeWatches(watches: () => Iterable<WatchedSet>): void {
    if (this.live) this.watches = watches;
  }

  /** The owned partition count, read at each collection. */
  observePartitions(mode: string, owned: () => number): void {
    if (this.live) this.partitions = { mode, owned };
  }

  /** `count` partitions gained after a handoff that began `seconds` ago. */
  partitionsHandedOff(count: number, seconds: number): void {
    if (!this.handoffDuration || !this.partitions) return;
    const attributes = { ...this.self, 'discovery.sharding.mode': this.partitions.mode };
    for (let i = 0; i < count; i++) this.handoffDuration.record(seconds, attributes);
  }

  httpPicked(service: string, serviceId: string): void {
    this.picks?.add(1, { 'discovery.service.name': service, 'discovery.service.id': serviceId });
  }

  httpRetried(service: string, reason: string): void {
    this.retries?.add(1, {
      'discovery.service.name': service,
      'discovery.http.retry.reason': reason,
    });
  }

  httpEjected(service: string, serviceId: string): void {
    this.ejections?.add(1, {
      'discovery.service.name': service,
      'discovery.service.id': serviceId,
    });
  }

  /** `count` instants of `job` that ended as `outcome`. */
  jobFired(job: string, outcome: 'run' | 'late' | 'skipped' | 'failed', count = 1): void {
    this.jobFires?.add(count, {
      ...this.self,
      'discovery.job.name': job,
      'discovery.job.outcome': outcome,
    });
  }

  /** A late run of `job` that started `seconds` after its instant. */
  jobLate(job: string, seconds: number): void {
    this.jobLateness?.record(seconds, { ...this.self, 'discovery.job.name': job });
  }

  /** Stops the observable callbacks: a closed app reports nothing more. */
  onApplicationShutdown(): void {
    for (const [instrument, callback] of this.observers.splice(0)) {
      instrument.removeCallback(callback);
    }
  }

  private observe(instrument: ObservableInstrument, callback: ObservationCallback): void {
    instrument.addCallback(callback);
    this.observers.push([instrument, callback]);
  }

  /** 0 while the last read succeeded; else seconds since the last answer; none before the first. */
  private staleness(watch: WatchedSet): number | undefined {
    const freshness = watch.freshness;
    if (!freshness) return undefined;
    return freshness.stale ? (this.now() - freshness.updatedAt.getTime()) / 1000 : 0;
  }
}

function watchAttributes(watch: WatchedSet): MetricAttributes {
  const attributes: MetricAttributes = { 'discovery.service.name': watch.name };
  if (watch.query.tag !== undefined) attributes['discovery.watch.tag'] = watch.query.tag;
  if (watch.query.datacenter !== undefined) {
    attributes['discovery.watch.datacenter'] = watch.query.datacenter;
  }
  return attributes;
}
