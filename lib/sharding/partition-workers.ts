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

/**
 * The handlers of `onPartition()`, one run per (owned partition, handler). Releasing a partition
 * aborts its runs and waits for them, bounded: a handler that throws is logged, one that never
 * settles is logged and left behind.
 */
export class PartitionWorkers {
  private readonly handlers = new Set<PartitionHandler>();
  private readonly running = new Map<number, Map<PartitionHandler, Run>>();
  private readonly tokens = new Map<number, number | undefined>();

  constructor(private readonly logger: Logger) {}

  /** Runs `handler` for every started partition from now on; the returned function stops it. */
  add(handler: PartitionHandler): () => void {
    this.handlers.add(handler);
    for (const [partition, token] of this.tokens) this.run(partition, handler, token);
    return () => {
      if (!this.handlers.delete(handler)) return;
      for (const runs of this.running.values()) {
        runs.get(handler)?.controller.abort();
        runs.delete(handler);
      }
    };
  }

  /** The partition is owned: every handler starts on it. */
  start(partition: number, token?: number): void {
    if (this.tokens.has(partition)) return;
    this.tokens.set(partition, token);
    for (const handler of this.handlers) this.run(partition, handler, token);
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

  private run(partition: number, handler: PartitionHandler, token: number | undefined): void {
    const controller = new AbortController();
    const done = (async () => {
      try {
        await handler(partition, { signal: controller.signal, token });
      } catch (error) {
        if (!controller.signal.aborted) {
          this.logger.error(
            `The handler of partition ${partition} failed: ${(error as Error)?.message ?? String(error)}`,
          );
        }
      }
    })();
    let runs = this.running.get(partition);
    if (!runs) this.running.set(partition, (runs = new Map<PartitionHandler, Run>()));
    runs.set(handler, { controller, done });
  }
}
