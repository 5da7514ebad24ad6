import type { Logger } from '@nestjs/common';
import type { FencedWriteResult } from '../consul/consul.client.js';
import type { ConsulTransport } from '../consul/consul.transport.js';
import type { DiscoveryMetrics } from '../metrics/discovery.metrics.js';
import {
  decideAcquisition,
  decideFire,
  parseJobRecord,
  type Claim,
  type DecisionInput,
  type JobRecord,
} from './fire-decision.js';
import type { JobSchedule } from './job-schedule.js';
import type { JobDefinition, JobFire } from './job.types.js';

/** This instance's hold on a job's partition: one run of the partition's handler. */
export interface JobLease {
  partition: number;
  /** The partition's `LockIndex` for this hold. */
  token: number;
  /** The session holding the partition's lock key. */
  session: string;
  lockKey: string;
  /** Aborted when the partition is released (ownership lost, shutdown). */
  signal: AbortSignal;
  /** `ShardingService.owns(partition)` now: false as soon as the lease lapses locally. */
  owns(): boolean;
}

export type JobHandler = (fire: JobFire) => unknown;

/** A job is idle, or running one fire (a fire meanwhile is skipped: overlap). */
type JobState =
  { phase: 'idle' } | { phase: 'running'; scheduledAt: Date; lease: JobLease; done: Promise<void> };

/**
 * One `@ClusterCron` job on this instance: while it holds the job's partition (a `JobLease`), it
 * claims fires in Consul (`writeFenced`: the lock still held + the record unchanged since it was
 * read) and runs what it claimed. Decisions are serialized; runs go on beside them.
 */
export class ClusterJob {
  private state: JobState = { phase: 'idle' };
  private lease?: JobLease;
  private decisions: Promise<void> = Promise.resolve();
  /**
   * The record as this instance last wrote it under a lease: while that lease holds, nobody else
   * can write it (the lock is checked in every write), so a claim needs no read.
   */
  private written?: { lease: JobLease; record: JobRecord; modifyIndex: number };

  constructor(
    readonly definition: JobDefinition,
    readonly schedule: JobSchedule,
    /** `<keyPrefix>/<service name>/<job name>`. */
    private readonly recordKey: string,
    private readonly handler: JobHandler,
    private readonly transport: ConsulTransport,
    private readonly metrics: DiscoveryMetrics,
    private readonly logger: Logger,
  ) {}

  get name(): string {
    return this.definition.name;
  }

  /** Whether this instance runs the job now. */
  get held(): boolean {
    const lease = this.lease;
    return lease !== undefined && !lease.signal.aborted && lease.owns();
  }

  /** The partition is held: catch up on what was missed since the record's `last`. */
  acquire(lease: JobLease): Promise<void> {
    this.lease = lease;
    return this.decide(lease, (input) => decideAcquisition(input, new Date()));
  }

  /** The hold ended: resolves once the decision and the run in progress settled. */
  async release(lease: JobLease): Promise<void> {
    if (this.lease === lease) this.lease = undefined;
    await this.decisions;
    if (this.state.phase === 'running' && this.state.lease === lease) await this.state.done;
  }

  /** A fire of `scheduledAt`: claimed and run if this instance holds the job; resolves after the run. */
  async fire(scheduledAt: Date): Promise<void> {
    const lease = this.lease;
    if (!lease) return;
    await this.decide(lease, (input) => decideFire(input, scheduledAt));
    if (this.state.phase === 'running' && this.state.scheduledAt === scheduledAt) {
      await this.state.done;
    }
  }

  private decide(
    lease: JobLease,
    plan: (input: DecisionInput) => Claim | undefined,
  ): Promise<void> {
    const next = this.decisions.then(() =>
      this.claim(lease, plan).catch((error: unknown) => {
        if (lease.signal.aborted) return;
        // Nothing was claimed: the next claim that commits reports the instant skipped.
        this.logger.warn(
          `Job "${this.name}": a claim failed: ${(error as Error)?.message ?? String(error)}`,
        );
      }),
    );
    this.decisions = next;
    return next;
  }

  private async claim(
    lease: JobLease,
    plan: (input: DecisionInput) => Claim | undefined,
  ): Promise<void> {
    if (lease !== this.lease || !this.held) return;
    // Overlap: the fire is not claimed; the next claim reports it skipped.
    if (this.state.phase === 'running') return;
    const known = this.written?.lease === lease ? this.written : undefined;
    let record = known?.record;
    let index = known?.modifyIndex ?? 0;
    if (!known) {
      const read = await this.transport.readKey(this.recordKey, { signal: lease.signal });
      record = read && parseJobRecord(read.value);
      index = read?.modifyIndex ?? 0;
    }
    const claim = plan({
      definition: this.definition,
      schedule: this.schedule,
      record,
      token: lease.token,
    });
    if (!claim || !this.held) return;
    const written = await this.transport.writeFenced({
      lockKey: lease.lockKey,
      session: lease.session,
      key: this.recordKey,
      index,
      value: JSON.stringify(claim.record),
    });
    this.remember(lease, claim.record, written);
    if (!written.committed) {
      // Changed behind our back (by hand): read it and decide again, once.
      if (known) return this.claim(lease, plan);
      this.logger.warn(
        `Job "${this.name}": claim of ${claim.record.last} refused: ${written.reason}`,
      );
      return;
    }
    this.reportSkipped(claim);
    if (claim.run) this.run(lease, claim, written);
  }

  private reportSkipped({ skipped, more }: Claim): void {
    if (skipped.length === 0) return;
    const listed = skipped.map((d) => d.toISOString()).join(', ');
    this.logger.warn(
      `Job "${this.name}": skipped ${skipped.length}${more ? '+' : ''} instant(s): ${listed}${more ? ', …' : ''}`,
    );
    this.metrics.jobFired(this.name, 'skipped', skipped.length);
  }

  private run(
    lease: JobLease,
    claim: Claim,
    written: Extract<FencedWriteResult, { committed: true }>,
  ): void {
    const { scheduledAt, late } = claim.run!;
    const fire: JobFire = {
      name: this.name,
      scheduledAt,
      token: written.lockIndex,
      signal: lease.signal,
      late,
    };
    if (late) this.metrics.jobLate(this.name, (Date.now() - scheduledAt.getTime()) / 1000);
    const done = (async () => {
      try {
        await this.handler(fire);
        this.metrics.jobFired(this.name, late ? 'late' : 'run');
        // Aborted runs stay 'claimed': at-least-once runs them again on the next owner.
        if (!lease.signal.aborted) await this.markDone(lease, claim, written.modifyIndex);
      } catch (error) {
        this.metrics.jobFired(this.name, 'failed');
        this.logger.error(
          `Job "${this.name}" failed for ${scheduledAt.toISOString()}: ${(error as Error)?.message ?? String(error)}`,
        );
        if (!lease.signal.aborted) await this.markDone(lease, claim, written.modifyIndex);
      } finally {
        this.state = { phase: 'idle' };
      }
    })();
    this.state = { phase: 'running', scheduledAt, lease, done };
  }

  /** What a write of `record` under `lease` left in Consul; after a refused one, nothing known. */
  private remember(lease: JobLease, record: JobRecord, written: FencedWriteResult): void {
    this.written = written.committed
      ? { lease, record, modifyIndex: written.modifyIndex }
      : undefined;
  }

  /** `state: 'done'`, if the lock is still held and nobody claimed since. */
  private async markDone(lease: JobLease, claim: Claim, index: number): Promise<void> {
    const record: JobRecord = { ...claim.record, state: 'done' };
    try {
      const written = await this.transport.writeFenced({
        lockKey: lease.lockKey,
        session: lease.session,
        key: this.recordKey,
        index,
        value: JSON.stringify(record),
      });
      this.remember(lease, record, written);
    } catch (error) {
      this.written = undefined;
      this.logger.debug(
        `Job "${this.name}": its run could not be marked done: ${(error as Error)?.message}`,
      );
    }
  }
}
