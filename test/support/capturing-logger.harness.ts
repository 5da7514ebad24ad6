import type { LoggerService } from '@nestjs/common';

export interface LogEntry {
  level: 'log' | 'error' | 'warn' | 'debug' | 'verbose' | 'fatal';
  text: string;
}

/** A LoggerService that keeps every line, with its parameters and stacks, for assertions. */
export class CapturingLogger implements LoggerService {
  readonly entries: LogEntry[] = [];

  log(message: unknown, ...params: unknown[]): void {
    this.add('log', message, params);
  }
  error(message: unknown, ...params: unknown[]): void {
    this.add('error', message, params);
  }
  warn(message: unknown, ...params: unknown[]): void {
    this.add('warn', message, params);
  }
  debug(message: unknown, ...params: unknown[]): void {
    this.add('debug', message, params);
  }
  verbose(message: unknown, ...params: unknown[]): void {
    this.add('verbose', message, params);
  }
  fatal(message: unknown, ...params: unknown[]): void {
    this.add('fatal', message, params);
  }

  /** Lines of one level (all levels when omitted). */
  lines(level?: LogEntry['level']): string[] {
    return this.entries.filter((e) => level === undefined || e.level === level).map((e) => e.text);
  }

  /** Everything logged so far, one string. */
  all(): string {
    return this.entries.map((e) => `[${e.level}] ${e.text}`).join('\n');
  }

  clear(): void {
    this.entries.length = 0;
  }

  private add(level: LogEntry['level'], message: unknown, params: unknown[]): void {
    this.entries.push({ level, text: [message, ...params].map(render).join(' ') });
  }
}

/** Every representation of an error a user could print: message, stack, own fields, cause. */
export function errorText(error: unknown): string {
  if (!(error instanceof Error)) return render(error);
  const fields = Object.fromEntries(Object.entries(error));
  return [
    String(error),
    error.stack ?? '',
    render(fields),
    error.cause === undefined ? '' : errorText(error.cause),
  ].join('\n');
}

export function render(value: unknown): string {
  if (value instanceof Error) return `${value.name}: ${value.message}\n${value.stack ?? ''}`;
  if (typeof value === 'string') return value;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
