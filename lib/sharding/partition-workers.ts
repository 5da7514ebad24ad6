import type { Logger } from '@nestjs/common';
import { withDeadline } from '../resilience/with-deadline.js';

/** Runs for each owned partition; `signal` aborts when the partition is released. */
export type PartitionHandler = (
  partition: number,
  ctx: { signal: AbortSignal; token?: number },
) => Promise<void> | void;

interface Run {
  readonly controller: AbortController;
  readonly done: Promise<void>;
}

/** One `add()`: the same function added twice is two registrations, each with its own runs. */
interface Registration {
  readonly handler: PartitionHandler;
}

/**
 * The handlers of `onPartition()`, one run per (owned partition, registration). Releasing a partition
 * aborts its runs and waits for them, bounded: a handler that throws is logged, one that never
 * settles is logged and left behind.
 */
export class PartitionWorkers {
  private readonly registrations = new Set<Registration>();
  private readonly running = new Map<number, Map<Registration, Run>>();
  private readonly tokens = new Map<number, number | undefined>();

  constructor(private readonly logger: Logger) {}

  /** Runs `handler` for every started partition from now on; the returned function stops it. */
  add(handler: PartitionHandler): () => void {
    const registration: Registration = { handler };
    this.registrations.add(registration);
    for (const [partition, token] of this.tokens) this.run(partition, registration, token);
    return () => {
      if (!this.registrations.delete(registration)) return;
      // Aborted, not forgotten: a release of the partition still waits for the run to settle,
      // so its lock is not given up while the handler is still at work.
      for (const runs of this.running.values()) runs.get(registration)?.controller.abort();
    };
  }

  /** The partition is owned: every handler starts on it. */
  start(partition: number, token?: number): void {
    if (this.tokens.has(partition)) return;
    this.tokens.set(partition, token);
    for (const registration of this.registrations) this.run(partition, registration, token);
  }

  /** Aborts the partition's runs and waits for them, at most `timeoutMs`. */
  async release(partition: number, timeoutMs: number): Promise<void> {
    this.tokens.delete(partition);
    const runs = this.running.get(partition);
    this.running.delete(partition);
    if (!runs || runs.size === 0) return;
    for (const run of runs.values()) run.controller.abort();
    const settled = await withDeadline(
      Promise.allSettled([...runs.values()].map((r) => r.done)).then(() => true),
      timeoutMs,
    );
    if (!settled) {
      this.logger.warn(
        `A handler of partition ${partition} did not settle within ${timeoutMs} ms of its release; no longer awaited`,
      );
    }
  }

  /** Releases every started partition. */
  async releaseAll(timeoutMs: number): Promise<void> {
    await Promise.all([...this.tokens.keys()].map((p) => this.release(p, timeoutMs)));
  }

  private run(partition: number, registration: Registration, token: number | undefined): void {
    const controller = new AbortController();
    const done = (async () => {
      try {
        await registration.handler(partition, { signal: controller.signal, token });
      } catch (error) {
        if (!controller.signal.aborted) {
          this.logger.error(
            `The handler of partition ${partition} failed: ${(error as Error)?.message ?? String(error)}`,
          );
        }
      }
    })();
    let runs = this.running.get(partition);
    if (!runs) this.running.set(partition, (runs = new Map<Registration, Run>()));
    runs.set(registration, { controller, done });
  }
}
