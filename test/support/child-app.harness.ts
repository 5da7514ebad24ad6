import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { repoRoot } from './consul-agent.harness.js';
import { waitFor } from './wait-for.harness.js';

/**
 * The fixture: a Nest app context on the BUILT library (`dist/`); its header has the protocol.
 * Found from the repository root, as this file also runs compiled from .tmp/toolkit (bench).
 */
export const CHILD_APP_FIXTURE = path.join(
  repoRoot(),
  'test',
  'support',
  'fixtures',
  'child-app.mjs',
);

/** What the fixture prints on stdout, one JSON object per line. */
export interface ChildEvent {
  event: string;
  /** Date.now() in the child when it printed the event. */
  t: number;
  [key: string]: unknown;
}

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Date.now() in this process when 'exit' fired. */
  at: number;
}

export type ChildAppMode = 'signal' | 'close' | 'close-watch';

export interface ChildAppOptions {
  /** See test/support/fixtures/child-app.mjs; default 'signal'. */
  mode?: ChildAppMode;
  /** DiscoveryModuleOptions, passed as JSON. */
  options: object;
  /** Hard cap on the child's life; an unref'd timer SIGKILLs it after this (default 60 s). */
  maxLifeMs?: number;
  /** With `options.sharding`: the partition handler's tuning (CHILD_APP_SHARD, see the fixture). */
  shard?: ShardTuning;
  /** Serve HTTP on `options.service.port` (CHILD_APP_HTTP, see the fixture); POST bodies go to `logFile`. */
  http?: { logFile: string; registerAfterListen?: boolean };
  /** Another fixture speaking the same protocol (default CHILD_APP_FIXTURE), with its own variables. */
  fixture?: { path: string; env?: Record<string, string> };
}

export interface ShardTuning {
  /** Write to the fixture's fenced store while owns(p) (default false). */
  fencedWriter?: boolean;
  /** Between two writes of one partition (default 50). */
  writeEveryMs?: number;
  /** Between two owns(p) checks (default 10). */
  pollMs?: number;
}

export interface ChildApp {
  readonly process: ChildProcess;
  readonly events: readonly ChildEvent[];
  /** Resolves when the child has exited (any way). */
  readonly exited: Promise<ChildExit>;
  /** Date.now() of the last kill() call. */
  readonly signalledAt: number | undefined;
  /** stderr (Nest's log lines) and any stdout line that is not an event. */
  output(): string;
  /** Resolves with the first event named `name` (bounded); rejects if the child exits first. */
  next(name: string, timeoutMs?: number): Promise<ChildEvent>;
  /** Every event named `name` so far, in order. */
  all(name: string): ChildEvent[];
  /** The last event named `name` so far. */
  last(name: string): ChildEvent | undefined;
  /** Date.now() in this process when the event named `name` arrived, if it did. */
  receivedAt(name: string): number | undefined;
  kill(signal: NodeJS.Signals): void;
  /** 'exit' listeners run synchronously at the event, before any promise continuation. */
  onExit(listener: (exit: ChildExit) => void): void;
}

const children = new Set<ChildProcess>();

/**
 * Runs the fixture app as a child process (plain `node`, without Jest's NODE_OPTIONS or any
 * CONSUL_* variable). Closing the parent's end of its stdin makes it close its app and end.
 */
export function startChildApp({
  mode = 'signal',
  options,
  maxLifeMs = 60_000,
  shard,
  http,
  fixture,
}: ChildAppOptions): ChildApp {
  const dist = path.join(repoRoot(), 'dist', 'index.js');
  if (!existsSync(dist)) throw new Error(`${dist} is missing: run \`npm run build\` first`);
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NODE_OPTIONS;
  for (const key of Object.keys(env)) if (key.startsWith('CONSUL_')) delete env[key];
  Object.assign(env, {
    CHILD_APP_MODE: mode,
    CHILD_APP_OPTIONS: JSON.stringify(options),
    CHILD_APP_MAX_LIFE_MS: String(maxLifeMs),
    CHILD_APP_SHARD: JSON.stringify(shard ?? {}),
  });
  if (http) env.CHILD_APP_HTTP = JSON.stringify(http);
  Object.assign(env, fixture?.env);
  const child = spawn(process.execPath, [fixture?.path ?? CHILD_APP_FIXTURE], {
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.add(child);
  child.stdin.on('error', () => undefined);

  const events: ChildEvent[] = [];
  const byName = new Map<string, ChildEvent[]>();
  const arrivals = new Map<string, number>();
  const exitListeners: ((exit: ChildExit) => void)[] = [];
  let output = '';
  let signalledAt: number | undefined;
  child.stderr.on('data', (chunk: Buffer) => {
    output += chunk.toString('utf8');
  });
  createInterface({ input: child.stdout }).on('line', (line) => {
    try {
      const parsed = JSON.parse(line) as ChildEvent;
      if (!arrivals.has(parsed.event)) arrivals.set(parsed.event, Date.now());
      events.push(parsed);
      let named = byName.get(parsed.event);
      if (!named) byName.set(parsed.event, (named = []));
      named.push(parsed);
    } catch {
      output += `[stdout] ${line}\n`;
    }
  });
  const exited = new Promise<ChildExit>((resolve) => {
    child.once('exit', (code, signal) => {
      children.delete(child);
      const exit = { code, signal, at: Date.now() };
      for (const listener of exitListeners) listener(exit);
      resolve(exit);
    });
  });

  return {
    process: child,
    events,
    exited,
    get signalledAt() {
      return signalledAt;
    },
    output: () => output,
    receivedAt: (name) => arrivals.get(name),
    all: (name) => [...(byName.get(name) ?? [])],
    last: (name) => byName.get(name)?.at(-1),
    next: (name, timeoutMs = 15_000) =>
      waitFor(
        () => {
          const found = byName.get(name)?.[0];
          if (found) return found;
          if (child.exitCode !== null || child.signalCode !== null) {
            throw new Error(`child exited before "${name}"`);
          }
          return undefined;
        },
        {
          timeoutMs,
          intervalMs: 5,
          message: `child event "${name}" (events: ${[...byName.keys()].join(', ')}; output: ${output.slice(-2000)})`,
        },
      ),
    kill(signal) {
      signalledAt = Date.now();
      child.kill(signal);
    },
    onExit(listener) {
      exitListeners.push(listener);
    },
  };
}

/** SIGKILLs every child app still running (afterEach/afterAll). */
export async function killChildApps(): Promise<void> {
  await Promise.all(
    [...children].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGKILL');
        }),
    ),
  );
}
