// Timing helpers shared by the sections.
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import process from 'node:process';
import { setImmediate } from 'node:timers';

export const now = () => process.hrtime.bigint();
export const nsSince = (t0) => Number(process.hrtime.bigint() - t0);
export const msToNs = (ms) => ms * 1e6;
export const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

/** Full collection, twice (weak refs and finalizers), when --expose-gc is on. */
export function collect() {
  if (typeof globalThis.gc === 'function') {
    globalThis.gc();
    globalThis.gc();
  }
}

/**
 * Per-call cost of an async call that usually completes from memory: `batches` batches of
 * `batchSize` awaited calls, each batch timed once; the sample is batch time / batchSize.
 */
export async function timeBatches(fn, { batches, batchSize, warmup }) {
  for (let i = 0; i < warmup; i++) await fn();
  collect();
  const samples = new Float64Array(batches);
  for (let b = 0; b < batches; b++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < batchSize; i++) await fn();
    samples[b] = Number(process.hrtime.bigint() - t0) / batchSize;
  }
  return samples;
}

/** Each call timed on its own (includes one hrtime.bigint() call of overhead, ~tens of ns). */
export async function timeEach(fn, { iterations, warmup }) {
  for (let i = 0; i < warmup; i++) await fn();
  collect();
  const samples = new Float64Array(iterations);
  for (let i = 0; i < iterations; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    samples[i] = Number(process.hrtime.bigint() - t0);
  }
  return samples;
}

/** Several async calls timed per call, interleaved (A B, B A, …) so drift hits them equally. */
export async function timeInterleaved(fns, { iterations, warmup }) {
  const names = Object.keys(fns);
  for (let i = 0; i < warmup; i++) for (const n of names) await fns[n]();
  collect();
  const samples = Object.fromEntries(names.map((n) => [n, new Float64Array(iterations)]));
  for (let i = 0; i < iterations; i++) {
    const order = i % 2 === 0 ? names : [...names].reverse();
    for (const n of order) {
      const t0 = process.hrtime.bigint();
      await fns[n]();
      samples[n][i] = Number(process.hrtime.bigint() - t0);
    }
  }
  return samples;
}

/**
 * Pins this process to CPU 0 and `pids` (the servers it measures against, the Consul agent) to
 * the other CPUs with `taskset`, so that client and servers stop preempting each other inside
 * one measurement; returns whether it could and a function that gives this process every CPU
 * back. A machine with one CPU or without `taskset` runs unpinned.
 */
export function pinApart(pids) {
  const cpus = os.cpus().length;
  const taskset = (list, pid) =>
    execFileSync('taskset', ['-a', '-p', '-c', list, String(pid)], { stdio: 'ignore' });
  const restore = () => taskset(`0-${cpus - 1}`, process.pid);
  const unpinned = { pinned: false, restore: () => undefined };
  if (cpus < 2) return unpinned;
  try {
    taskset('0', process.pid);
    for (const pid of pids) if (pid !== undefined) taskset(`1-${cpus - 1}`, pid);
  } catch {
    try {
      restore();
    } catch {
      // no taskset at all: nothing was pinned
    }
    return unpinned;
  }
  return { pinned: true, restore };
}
