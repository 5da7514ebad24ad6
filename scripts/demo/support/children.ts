import { fork, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';

import { info } from './output.js';
import { withDeadline } from './poll.js';

/** What an instance sends its parent over IPC once it is registered and listening. */
export interface ReadyMessage {
  type: 'ready';
  serviceId: string;
  address: string;
  port: number;
  pid: number;
}

/** What an instance sends on every change of its owned partitions (ShardingService.assignments$). */
export interface AssignmentMessage {
  type: 'assignment';
  serviceId: string;
  owned: number[];
  acquired: number[];
  released: number[];
  /** The serviceIds the instance computed its table from. */
  members: string[];
  version: number;
  /** Exclusive mode: the fencing token of each owned partition. */
  tokens: Record<number, number>;
}

/** What an instance sends for each run of the demo's `@ClusterCron` job. */
export interface JobMessage {
  type: 'job';
  serviceId: string;
  /** The scheduled instant (ms). */
  at: number;
  token: number;
  late: boolean;
}

export function isJobMessage(message: unknown): message is JobMessage {
  return (
    typeof message === 'object' &&
    message !== null &&
    (message as { type?: unknown }).type === 'job'
  );
}

export function isAssignmentMessage(message: unknown): message is AssignmentMessage {
  return (
    typeof message === 'object' &&
    message !== null &&
    (message as { type?: unknown }).type === 'assignment'
  );
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

function isReadyMessage(message: unknown): message is ReadyMessage {
  return (
    typeof message === 'object' &&
    message !== null &&
    (message as { type?: unknown }).type === 'ready'
  );
}

export function describeExit({ code, signal }: ExitInfo): string {
  return signal ? `signal ${signal}` : `code ${code}`;
}

/** One example-service instance running as its own Node process. */
export class InstanceProcess {
  readonly exited: Promise<ExitInfo>;
  /** True once we asked it to stop: its exit is then expected. */
  stopping = false;
  private readonly tail: string[] = [];

  private constructor(
    readonly label: string,
    readonly child: ChildProcess,
  ) {
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    void this.exited.then((exit) => {
      if (!this.stopping) info(`${this.label} exited unexpectedly (${describeExit(exit)})`);
    });
    this.pipe(child.stdout);
    this.pipe(child.stderr);
  }

  /** Forks `entry` with its own IPC channel; its output is shown prefixed with `label`. */
  static start(entry: URL, label: string, env: NodeJS.ProcessEnv): InstanceProcess {
    const child = fork(entry, [], { env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    return new InstanceProcess(label, child);
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The last lines the process wrote, for error messages. */
  get output(): string {
    return this.tail.join('\n');
  }

  /** Resolves with the ready message; rejects if the process exits first or the deadline passes. */
  ready(timeoutMs: number): Promise<ReadyMessage> {
    const ready = new Promise<ReadyMessage>((resolve, reject) => {
      const onMessage = (message: unknown): void => {
        if (!isReadyMessage(message)) return;
        this.child.off('message', onMessage);
        resolve(message);
      };
      this.child.on('message', onMessage);
      void this.exited.then((exit) => {
        this.child.off('message', onMessage);
        reject(new Error(`${this.label} exited before it was ready (${describeExit(exit)})`));
      });
      this.child.once('error', reject);
    });
    return withDeadline(`${this.label} to start`, timeoutMs, ready);
  }

  /**
   * SIGTERM, then wait (bounded) for the process to exit. If it does not, SIGKILL it and
   * reject: a process that ignores SIGTERM is a failure the demo must report.
   */
  async stop(timeoutMs: number): Promise<ExitInfo> {
    this.stopping = true;
    if (!this.running) return this.exited;
    this.child.kill('SIGTERM');
    try {
      return await withDeadline(`${this.label} to exit after SIGTERM`, timeoutMs, this.exited);
    } catch (error) {
      this.child.kill('SIGKILL');
      await withDeadline(`${this.label} to die after SIGKILL`, 5_000, this.exited);
      throw error;
    }
  }

  /** SIGKILL (a crash: no shutdown hook runs); resolves once the process is gone. */
  async kill(): Promise<ExitInfo> {
    this.stopping = true;
    if (this.running) this.child.kill('SIGKILL');
    return withDeadline(`${this.label} to die after SIGKILL`, 5_000, this.exited);
  }

  private pipe(stream: Readable | null): void {
    if (!stream) return;
    createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => {
      this.tail.push(line);
      this.tail.splice(0, Math.max(0, this.tail.length - 30));
      info(`│ ${this.label}: ${line}`);
    });
  }
}
