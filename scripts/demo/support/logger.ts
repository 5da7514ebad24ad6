import type { LoggerService } from '@nestjs/common';

/** Nest's own start-up chatter; shown only with DEMO_VERBOSE=1. */
const NEST_CONTEXTS = new Set([
  'NestFactory',
  'InstanceLoader',
  'RoutesResolver',
  'RouterExplorer',
  'NestApplication',
  'NestApplicationContext',
]);

const verbose = process.env.DEMO_VERBOSE === '1';

function text(message: unknown): string {
  if (message instanceof Error) return message.stack ?? message.message;
  return typeof message === 'string' ? message : JSON.stringify(message);
}

/**
 * A one-line-per-message Nest logger: `[Context] message`. The library's own log lines (what it
 * registered, deregistered, retried) are kept; Nest's start-up lines and debug output are
 * dropped unless DEMO_VERBOSE=1.
 */
export class DemoLogger implements LoggerService {
  constructor(private readonly write: (line: string, isError: boolean) => void) {}

  log(message: unknown, ...params: unknown[]): void {
    const context = this.context(params);
    if (!verbose && NEST_CONTEXTS.has(context)) return;
    this.print('', message, context, false);
  }

  warn(message: unknown, ...params: unknown[]): void {
    this.print('WARN ', message, this.context(params), true);
  }

  error(message: unknown, ...params: unknown[]): void {
    const context = this.context(params);
    const stack = params.find((p): p is string => typeof p === 'string' && p.includes('\n    at '));
    this.print(
      'ERROR ',
      stack && !(message instanceof Error) ? `${text(message)}\n${stack}` : message,
      context,
      true,
    );
  }

  debug(message: unknown, ...params: unknown[]): void {
    if (verbose) this.print('debug ', message, this.context(params), false);
  }

  verbose(message: unknown, ...params: unknown[]): void {
    if (verbose) this.print('verbose ', message, this.context(params), false);
  }

  fatal(message: unknown, ...params: unknown[]): void {
    this.print('FATAL ', message, this.context(params), true);
  }

  private context(params: unknown[]): string {
    const last = params.at(-1);
    return typeof last === 'string' && !last.includes('\n') ? last : '';
  }

  private print(level: string, message: unknown, context: string, isError: boolean): void {
    const prefix = context ? `[${context}] ` : '';
    for (const line of `${level}${prefix}${text(message)}`.split('\n')) this.write(line, isError);
  }
}
