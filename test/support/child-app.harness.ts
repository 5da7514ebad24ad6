import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { DiscoveryModuleOptions } from '../../lib/index.js';

/** The reliability fixture: a Nest app context on the BUILT library (`dist/`). */
export const RELIABILITY_APP_FIXTURE = fileURLToPath(
  new URL('./fixtures/reliability-app.mjs', import.meta.url),
);

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Date.now() when 'exit' fired. */
  at: number;
}

export interface ChildApp {
  readonly pid: number;
  /** Resolves with the '@@ready' payload; rejects if the child exits first. */
  readonly ready: Promise<{ pid: number; serviceId: string }>;
  /** Resolves when the process has exited ('exit' event). */
  readonly exited: Promise<ChildExit>;
  /** Date.now() when '@@closed' was printed (shutdown hooks done), if it was. */
  readonly closedAt: number | undefined;
  /** Date.now() of the last kill() call. */
  readonly signalledAt: number | undefined;
  /** Everything the child printed (stdout + stderr). */
  output(): string;
  kill(signal: NodeJS.Signals): void;
  /** 'exit' listeners run synchronously at the event, before any promise continuation. */
  onExit(listener: (exit: ChildExit) => void): void;
}

/**
 * Starts the fixture app as a child process (plain `node`, no loader, no inherited NODE_OPTIONS).
 * Closing the parent's end of stdin makes the child shut down, so none outlives a test run.
 */
export function startChildApp(
  options: DiscoveryModuleOptions,
  fixture = RELIABILITY_APP_FIXTURE,
): ChildApp {
  const dist = fileURLToPath(new URL('../../dist/index.js', import.meta.url));
  if (!existsSync(dist)) throw new Error(`${dist} is missing: run \`npm run build\` first`);
  const child: ChildProcess = spawn(process.execPath, [fixture], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: {
      ...process.env,
      NODE_OPTIONS: '',
      RELIABILITY_APP_OPTIONS: JSON.stringify(options),
    },
  });
  if (child.pid === undefined) throw new Error(`could not spawn ${process.execPath}`);

  let out = '';
  let carry = '';
  let closedAt: number | undefined;
  let signalledAt: number | undefined;
  let onReady: (info: { pid: number; serviceId: string }) => void = () => undefined;
  const exitListeners: ((exit: ChildExit) => void)[] = [];

  const ready = new Promise<{ pid: number; serviceId: string }>((resolve, reject) => {
    onReady = resolve;
    child.once('exit', (code, signal) =>
      reject(new Error(`child exited before ready (code ${code}, signal ${signal})\n${tail(out)}`)),
    );
  });
  ready.catch(() => undefined); // observed by whoever awaits it

  (child.stdout as Readable).on('data', (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    out += text;
    const lines = (carry + text).split('\n');
    carry = lines.pop() ?? '';
    for (const line of lines) {
      if (line.startsWith('@@ready ')) {
        onReady(JSON.parse(line.slice('@@ready '.length)) as { pid: number; serviceId: string });
      } else if (line === '@@closed') {
        closedAt ??= Date.now();
      }
    }
  });
  (child.stderr as Readable).on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));

  const exited = new Promise<ChildExit>((resolve) => {
    child.once('exit', (code, signal) => {
      const exit = { code, signal, at: Date.now() };
      for (const listener of exitListeners) listener(exit);
      resolve(exit);
    });
  });
  // Ends the stdin pipe if this process goes away without killing the child.
  (child.stdin as Writable).on('error', () => undefined);

  return {
    pid: child.pid,
    ready,
    exited,
    get closedAt() {
      return closedAt;
    },
    get signalledAt() {
      return signalledAt;
    },
    output: () => out,
    kill(signal) {
      signalledAt = Date.now();
      child.kill(signal);
    },
    onExit(listener) {
      exitListeners.push(listener);
    },
  };
}

function tail(text: string, lines = 30): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}
