import { Inject, Injectable } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import { HealthIndicatorService, type HealthIndicatorResult } from '@nestjs/terminus';
import { CLUSTER_JOBS, DISCOVERY_SETTINGS, type RunningJobs } from '../discovery.constants.js';
import { DiscoveryService } from '../discovery.service.js';
import { DiscoverySettings } from '../settings/discovery.settings.js';
import { ShardingService } from '../sharding/sharding.service.js';
import { checkHealthArguments, type DiscoveryHealthOptions } from './discovery-health.arguments.js';
import { healthReport } from './discovery-health.report.js';

/**
 * A `@nestjs/terminus` indicator (11 and 12: built on `HealthIndicatorService` only). List it in
 * the `providers` of a module that imports `TerminusModule` and sees `DiscoveryService`. It
 * depends on the public classes alone, so it works on the in-memory testing module too.
 */
@Injectable()
export class DiscoveryHealthIndicator {
  constructor(
    private readonly health: HealthIndicatorService,
    private readonly discovery: DiscoveryService,
    private readonly sharding: ShardingService,
    @Inject(DISCOVERY_SETTINGS) private readonly settings: DiscoverySettings,
    private readonly moduleRef: ModuleRef,
  ) {}

  /** `ClusterScheduleModule`'s jobs, wherever it is imported; `null` without it. */
  private jobs?: RunningJobs | null;

  /**
   * Up with `{ enabled: false }` when discovery is off (the agent is not asked). Otherwise up when
   * the agent answers (local reads, bounded by `consul.timeoutMs`) and, when a service is
   * configured and `requireRegistered`, it is registered and passing in Consul's view (maintenance
   * mode or a critical check: down); with `maxStaleMs`, also
   * when no name of `watch.services` has been stale for longer. Details: the agent, the
   * registration, each watched name's freshness, the owned partition count when sharding.
   */
  async isHealthy(
    key = 'discovery',
    options: DiscoveryHealthOptions = {},
  ): Promise<HealthIndicatorResult> {
    const checked = checkHealthArguments(key, options);
    const indicator = this.health.check(checked.key);
    // Discovery is off: nothing to require, and no agent to ask.
    if (!this.settings.enabled) return indicator.up({ enabled: false });
    const status = await this.discovery.status();
    const { up, details } = healthReport({
      status,
      requireRegistered: checked.requireRegistered,
      maxStaleMs: checked.maxStaleMs,
      watches: this.settings.watch.services.map((name) => ({
        name,
        freshness: this.discovery.freshness(name),
      })),
      owned: this.settings.sharding ? this.sharding.owned().length : undefined,
      jobs: this.runningJobs()?.running(),
      now: Date.now(),
    });
    return up ? indicator.up({ ...details }) : indicator.down({ ...details });
  }

  private runningJobs(): RunningJobs | null {
    if (this.jobs === undefined) {
      try {
        this.jobs = this.moduleRef.get<RunningJobs>(CLUSTER_JOBS, { strict: false });
      } catch {
        this.jobs = null;
      }
    }
    return this.jobs;
  }
}
