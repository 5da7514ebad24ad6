import { Inject, Injectable, Logger, Optional } from '@nestjs/common';
import { concat, defer, Observable, of, Subject, type Subscription } from 'rxjs';
import { LOCAL_DATACENTER } from '../consul/consul.client.js';
import type { ConsulTransport } from '../consul/consul.transport.js';
import { CONSUL_CLIENT, DISCOVERY_SETTINGS } from '../discovery.constants.js';
import { DiscoveryMetrics } from '../metrics/discovery.metrics.js';
import {
  checkHandler,
  checkPartition,
  checkShardKey,
  shardingOff,
} from '../protocol/sharding.arguments.js';
import type { ServiceInstance } from '../protocol/service-discovery.protocol.js';
import { SelfRegistration } from '../registration/self-registration.js';
import { DiscoverySettings, type ShardingSettings } from '../settings/discovery.settings.js';
import { WatchRegistry } from '../watch/watch.registry.js';
import type { ServiceWatch } from '../watch/service-watch.js';
import { CooperativeOwnership } from './cooperative.ownership.js';
import { ExclusiveOwnership } from './exclusive.ownership.js';
import { HandoffClock } from './handoff-clock.js';
import type { Ownership } from './ownership.js';
import { PartitionWorkers, type PartitionHandler } from './partition-workers.js';
import { SettleWindow } from './settle-window.js';
import { keyPartition } from './shard-route.js';
import { shardInput } from './shard-membership.js';
import { ShardTable } from './shard-table.js';

export type { PartitionHandler } from './partition-workers.js';

export interface ShardAssignment {
  /** Ascending. */
  owned: number[];
  acquired: number[];
  released: number[];
  /** serviceIds the table was computed from, ascending. */
  members: string[];
  /** Increases with every recompute on this instance. */
  version: number;
}

/**
 * Partitions of the own service over its live membership (`sharding.*`): every instance computes
 * the same table from the watched passing set of its service, no coordinator. Cooperative:
 * ownership is the table; exclusive: an instance owns a partition only while it holds the
 * partition's Consul lock and its own lease is fresh.
 */
@Injectable()
export class ShardingService {
  private readonly logger = new Logger(ShardingService.name);
  private readonly config?: ShardingSettings;
  private readonly workers = new PartitionWorkers(this.logger);
  private readonly ownership?: Ownership;
  private readonly exclusive?: ExclusiveOwnership;
  private readonly changes = new Subject<ShardAssignment>();
  private version = 0;
  private lastChange: Pick<ShardAssignment, 'acquired' | 'released'> = {
    acquired: [],
    released: [],
  };
  private table?: ShardTable;
  /** This instance's partitions in the current table (ascending). */
  private target: number[] = [];
  private readonly handoff = new HandoffClock();
  private instances = new Map<string, ServiceInstance>();
  private latest: readonly ServiceInstance[] = [];
  private watch?: ServiceWatch;
  private subscription?: Subscription;
  private settle?: SettleWindow;
  private stopping?: Promise<void>;

  constructor(
    @Inject(DISCOVERY_SETTINGS) private readonly settings: DiscoverySettings,
    @Inject(CONSUL_CLIENT) client: ConsulTransport,
    private readonly watches: WatchRegistry,
    private readonly registration: SelfRegistration,
    @Optional() private readonly metrics: DiscoveryMetrics = DiscoveryMetrics.noop,
  ) {
    this.config = settings.sharding;
    if (!this.config) return;
    metrics.observePartitions(this.config.mode, () => this.owned().length);
    const changed = (acquired: number[], released: number[]): void => this.emit(acquired, released);
    if (this.config.mode === 'exclusive') {
      this.exclusive = new ExclusiveOwnership(
        settings,
        client,
        registration,
        this.workers,
        changed,
        this.logger,
      );
    }
    this.ownership = this.exclusive ?? new CooperativeOwnership(this.config, this.workers, changed);
  }

  /** murmur3 x86 32-bit (seed 0) of the key's UTF-8 bytes, mod `sharding.partitions`. */
  partitionOf(key: string): number {
    const partitions = this.requireConfig().partitions;
    return keyPartition(checkShardKey(key), partitions);
  }

  /** The instance the current table gives the partition (or the key's partition) to. */
  ownerOf(keyOrPartition: string | number): ServiceInstance | undefined {
    const partition = this.partition(keyOrPartition);
    const owner = this.table?.ownerOf(partition);
    return owner === undefined ? undefined : this.instances.get(owner);
  }

  /** Cooperative: the table gives it to this instance; exclusive: its lock is held, the lease fresh. */
  owns(keyOrPartition: string | number): boolean {
    const partition = this.partition(keyOrPartition);
    return this.ownership?.owns(partition) ?? false;
  }

  /** Ascending. */
  owned(): number[] {
    return this.ownership?.owned() ?? [];
  }

  /** Exclusive: the partition's fencing token (its lock's `LockIndex`); otherwise `undefined`. */
  token(partition: number): number | undefined {
    const checked = checkPartition(partition, this.requireConfig().partitions);
    return this.ownership?.token(checked);
  }

  /** The current assignment at once, then every change of `owned()`. */
  get assignments$(): Observable<ShardAssignment> {
    return defer(() => concat(of(this.assignment()), this.changes));
  }

  /** Runs `handler` for each owned partition (now and later); returns the function that stops it. */
  onPartition(handler: PartitionHandler): () => void {
    this.requireConfig();
    return this.workers.add(checkHandler(handler));
  }

  /** Bootstrap: follow the own service's passing set. */
  start(): void {
    const config = this.config;
    const name = this.settings.service.name;
    if (!config || !name || !this.settings.enabled) return;
    this.settle = new SettleWindow(config.settleMs, () => this.recompute());
    // The membership the locks go with is the agent's own datacenter's; with no other datacenter
    // configured, the watch is shared with discovery's of the same name.
    this.watch = this.watches.acquire(
      name,
      this.settings.consul.datacenter === undefined ? {} : { datacenter: LOCAL_DATACENTER },
    );
    this.subscription = this.watch.instances$.subscribe((instances) => {
      this.latest = instances;
      this.handoff.begin();
      this.settle?.touch();
    });
    this.ownership?.start();
  }

  /**
   * Before `deregisterSelf()` (exclusive): `owns()` false at once, handlers drained and locks
   * released — no lock-delay for the next owner — before deregistering would invalidate the
   * session. `undefined` when there is nothing to withdraw (cooperative, or sharding off).
   */
  withdraw(): Promise<void> | undefined {
    return this.exclusive?.withdraw();
  }

  /** After a successful `registerSelf()`: ownership resumes (exclusive: locks asked again). */
  restore(): void {
    this.exclusive?.restore();
  }

  /**
   * Shutdown, by `deadline`: handlers aborted and drained, then (exclusive) locks released and
   * the session destroyed, all before self-registration deregisters.
   */
  stop(deadline: number): Promise<void> {
    this.stopping ??= this.shutDown(deadline);
    return this.stopping;
  }

  private async shutDown(deadline: number): Promise<void> {
    this.settle?.cancel();
    this.subscription?.unsubscribe();
    if (this.watch) this.watches.release(this.watch);
    await this.ownership?.stop(deadline);
    this.changes.complete();
  }

  private recompute(): void {
    if (this.stopping || !this.config || !this.ownership) return;
    const input = shardInput(this.latest, this.config);
    if (!input) return;
    this.table = new ShardTable(input.members, input.options);
    this.instances = new Map(this.latest.map((i) => [i.serviceId, i]));
    const self = this.settings.service.id;
    this.version++;
    this.target = self !== undefined ? this.table.owned(self) : [];
    this.ownership.assign(this.target);
    this.handoff.settle(this.owned(), this.target);
  }

  private assignment(): ShardAssignment {
    return {
      owned: this.owned(),
      ...this.lastChange,
      members: [...(this.table?.members ?? [])],
      version: this.version,
    };
  }

  private emit(acquired: number[], released: number[]): void {
    const waited = this.handoff.elapsed();
    if (waited !== undefined) this.metrics.partitionsHandedOff(acquired.length, waited);
    this.handoff.settle(this.owned(), this.target);
    this.lastChange = { acquired, released };
    this.changes.next(this.assignment());
  }

  private partition(keyOrPartition: string | number): number {
    const { partitions } = this.requireConfig();
    return typeof keyOrPartition === 'number'
      ? checkPartition(keyOrPartition, partitions)
      : this.partitionOf(keyOrPartition);
  }

  private requireConfig(): ShardingSettings {
    if (!this.config) throw shardingOff();
    return this.config;
  }
}
