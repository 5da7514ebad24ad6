import {
  Inject,
  Injectable,
  Logger,
  type BeforeApplicationShutdown,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
  type OnModuleInit,
} from '@nestjs/common';
import { DiscoveryService as NestDiscoveryService, MetadataScanner, ModuleRef } from '@nestjs/core';
import { SchedulerRegistry } from '@nestjs/schedule';
import { CronJob } from 'cron';
import type { ConsulTransport } from '../consul/consul.transport.js';
import { CONSUL_CLIENT, DISCOVERY_SETTINGS, type RunningJobs } from '../discovery.constants.js';
import { DiscoverySettingsError } from '../errors/discovery-settings.error.js';
import { duplicateJobMessage, scheduleNeedsExclusiveMessage } from '../errors/error-messages.js';
import { DiscoveryMetrics } from '../metrics/discovery.metrics.js';
import { ViolationCollector } from '../protocol/input.reader.js';
import { abortableDelay } from '../resilience/abortable-delay.js';
import { KV_PREFIX_PATTERN, type DiscoverySettings } from '../settings/discovery.settings.js';
import { ShardingService } from '../sharding/sharding.service.js';
import type { DeclaredJob } from './cluster-cron.decorator.js';
import {
  CLUSTER_SCHEDULE_OPTIONS,
  type ClusterScheduleModuleOptions,
} from './cluster-schedule.module-definition.js';
import { ClusterJob, type JobHandler, type JobLease } from './cluster-job.js';
import { readJob } from './job.arguments.js';
import {
  CLUSTER_CRON_JOBS,
  DEFAULT_JOB_KEY_PREFIX,
  SCHEDULE_CRON_OPTIONS,
} from './schedule.constants.js';

const SUBJECT = '@ClusterCron jobs';
/** A timer that fires a little early still names the instant it was set for. */
const TICK_TOLERANCE_MS = 50;
const LOCK_READ_RETRY_MS = 250;

/**
 * Finds the `@ClusterCron` methods (as `@nestjs/schedule`'s explorer finds `@Cron`), checks them
 * at module init (no I/O yet), registers one `CronJob` per job in `SchedulerRegistry`, and runs
 * each job's fires on the instance that holds the job's partition.
 */
@Injectable()
export class ClusterScheduler
  implements
    RunningJobs,
    OnModuleInit,
    OnApplicationBootstrap,
    BeforeApplicationShutdown,
    OnApplicationShutdown
{
  private readonly logger = new Logger(ClusterScheduler.name);
  private readonly jobs = new Map<string, ClusterJob>();
  private readonly crons = new Map<string, CronJob>();
  private byPartition = new Map<number, ClusterJob[]>();
  /** What the holds use, resolved at module init. */
  private runtime?: { sharding: ShardingService; transport: ConsulTransport; lockPrefix: string };
  private unregister?: () => void;

  constructor(
    @Inject(CLUSTER_SCHEDULE_OPTIONS) private readonly options: ClusterScheduleModuleOptions,
    private readonly discovery: NestDiscoveryService,
    private readonly scanner: MetadataScanner,
    private readonly registry: SchedulerRegistry,
    private readonly moduleRef: ModuleRef,
  ) {}

  /** The jobs this instance runs now (it holds their partitions), by name. */
  running(): string[] {
    return [...this.jobs.values()]
      .filter((job) => job.held)
      .map((job) => job.name)
      .sort();
  }

  /**
   * Fires job `name` for `scheduledAt` now, as its timer would: claimed and run if this instance
   * holds the job. Resolves once the run (if any) ended. For tests and manual triggers.
   */
  async fire(name: string, scheduledAt: Date): Promise<void> {
    const job = this.jobs.get(name);
    if (!job)
      throw new DiscoverySettingsError(
        [{ path: 'name', reasons: [`name "${name}" is no @ClusterCron job`] }],
        SUBJECT,
      );
    return job.fire(scheduledAt);
  }

  onModuleInit(): void {
    const settings = this.moduleRef.get<DiscoverySettings>(DISCOVERY_SETTINGS, { strict: false });
    const out = new ViolationCollector();
    const keyPrefix = this.options.keyPrefix ?? DEFAULT_JOB_KEY_PREFIX;
    if (typeof keyPrefix !== 'string' || !KV_PREFIX_PATTERN.test(keyPrefix)) {
      out.add(
        'keyPrefix',
        'keyPrefix must be a KV key prefix like athomic/jobs (no leading or trailing /)',
      );
    }
    if (settings.sharding?.mode !== 'exclusive') {
      out.add('sharding.mode', scheduleNeedsExclusiveMessage(settings.sharding?.mode));
    }
    const found = this.explore(out);
    if (!out.empty) throw new DiscoverySettingsError(out.violations, SUBJECT);

    const sharding = this.moduleRef.get(ShardingService, { strict: false });
    const transport = this.moduleRef.get<ConsulTransport>(CONSUL_CLIENT, { strict: false });
    const metrics = this.moduleRef.get(DiscoveryMetrics, { strict: false });
    const service = settings.service.name ?? '';
    this.runtime = {
      sharding,
      transport,
      lockPrefix: `${settings.sharding!.lock.prefix}/${service}`,
    };
    for (const { definition, schedule, handler } of found) {
      const job = new ClusterJob(
        definition,
        schedule,
        `${keyPrefix}/${service}/${definition.name}`,
        handler,
        transport,
        metrics,
        this.logger,
      );
      this.jobs.set(definition.name, job);
      const partition = sharding.partitionOf(`job:${definition.name}`);
      this.byPartition.set(partition, [...(this.byPartition.get(partition) ?? []), job]);
      const cron = CronJob.from({
        cronTime: definition.expression,
        timeZone: definition.timeZone,
        onTick: () => this.tick(job),
        start: false,
      });
      this.crons.set(definition.name, cron);
      this.registry.addCronJob(definition.name, cron);
    }
    if (this.jobs.size > 0) this.unregister = sharding.onPartition((p, ctx) => this.hold(p, ctx));
  }

  onApplicationBootstrap(): void {
    for (const cron of this.crons.values()) cron.start();
  }

  /** No fire after this; the runs end with their partitions (sharding's drain). */
  beforeApplicationShutdown(): void {
    for (const cron of this.crons.values()) void cron.stop();
  }

  /**
   * After sharding's drain (`DiscoveryService.beforeApplicationShutdown`), not before: removing
   * the handler detaches its runs from the drain, so the lock would go (and the next owner start)
   * while a run still winds down.
   */
  onApplicationShutdown(): void {
    this.unregister?.();
    this.unregister = undefined;
  }

  private tick(job: ClusterJob): void {
    const scheduledAt = job.schedule.latestAtOrBefore(new Date(Date.now() + TICK_TOLERANCE_MS));
    if (scheduledAt) void job.fire(scheduledAt);
  }

  /** One hold of `partition` (a run of sharding's handler): its jobs run until `signal` aborts. */
  private async hold(
    partition: number,
    { signal, token }: { signal: AbortSignal; token?: number },
  ): Promise<void> {
    const jobs = this.byPartition.get(partition);
    if (!jobs || token === undefined) return;
    const { sharding, lockPrefix } = this.runtime!;
    const lockKey = `${lockPrefix}/${partition}`;
    const session = await this.holder(lockKey, token, signal);
    if (session !== undefined) {
      const lease: JobLease = {
        partition,
        token,
        session,
        lockKey,
        signal,
        owns: () => sharding.owns(partition),
      };
      for (const job of jobs) void job.acquire(lease);
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      await Promise.all(jobs.map((job) => job.release(lease)));
    }
  }

  /**
   * The session that took `lockKey` at `token` (this instance's: a later acquisition by anyone
   * else raises the `LockIndex`); `undefined` once `signal` aborted or the key moved on.
   */
  private async holder(
    lockKey: string,
    token: number,
    signal: AbortSignal,
  ): Promise<string | undefined> {
    const { transport } = this.runtime!;
    while (!signal.aborted) {
      try {
        const entry = await transport.readKey(lockKey, { signal });
        if (entry && entry.lockIndex === token && entry.session) return entry.session;
        if (entry && entry.lockIndex > token) return undefined;
      } catch (error) {
        if (signal.aborted) return undefined;
        this.logger.warn(
          `Reading the lock ${lockKey} failed: ${(error as Error)?.message ?? String(error)}`,
        );
      }
      await abortableDelay(LOCK_READ_RETRY_MS, signal);
    }
    return undefined;
  }

  /** Every `@ClusterCron` of the app's providers and controllers, checked; violations go to `out`. */
  private explore(out: ViolationCollector) {
    const plain = this.plainCronNames();
    const names = new Set<string>();
    const found: {
      definition: ClusterJob['definition'];
      schedule: ClusterJob['schedule'];
      handler: JobHandler;
    }[] = [];
    for (const wrapper of [...this.discovery.getControllers(), ...this.discovery.getProviders()]) {
      const instance = wrapper.instance as Record<string | symbol, unknown> | undefined;
      if (!instance || typeof instance !== 'object') continue;
      const declared = Reflect.getMetadata(CLUSTER_CRON_JOBS, instance.constructor) as
        DeclaredJob[] | undefined;
      for (const job of declared ?? []) {
        const method = instance[job.key];
        const read = readJob(job, instance.constructor.name, method, out);
        if (!read) continue;
        const name = read.definition.name;
        if (names.has(name) || plain.has(name) || this.registry.doesExist('cron', name)) {
          out.add(
            `${instance.constructor.name}.${String(job.key)}.name`,
            duplicateJobMessage(name),
          );
          continue;
        }
        names.add(name);
        const handler: JobHandler = (fire) =>
          (method as (f: typeof fire) => unknown).call(instance, fire);
        found.push({ ...read, handler });
      }
    }
    return found;
  }

  /** Names of `@nestjs/schedule`'s own `@Cron` methods (registered only at bootstrap). */
  private plainCronNames(): Set<string> {
    const names = new Set<string>();
    for (const wrapper of [...this.discovery.getControllers(), ...this.discovery.getProviders()]) {
      const instance = wrapper.instance as Record<string, unknown> | undefined;
      const prototype = instance && (Object.getPrototypeOf(instance) as object | null);
      if (!instance || typeof instance !== 'object' || !prototype) continue;
      for (const key of this.scanner.getAllMethodNames(prototype)) {
        const options = Reflect.getMetadata(SCHEDULE_CRON_OPTIONS, instance[key] as object) as
          { name?: string } | undefined;
        if (options?.name) names.add(options.name);
      }
    }
    return names;
  }
}
