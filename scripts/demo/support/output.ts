const started = Date.now();

function elapsed(): string {
  return `${((Date.now() - started) / 1000).toFixed(2)}s`.padStart(7);
}

/** A numbered step line: `[  0.12s] ▸ text`. */
export function step(text: string): void {
  process.stdout.write(`[${elapsed()}] ▸ ${text}\n`);
}

/** A detail line under the current step. */
export function info(text: string): void {
  process.stdout.write(`           ${text}\n`);
}

export function warn(text: string): void {
  process.stdout.write(`           ! ${text}\n`);
}

export function totalSeconds(): string {
  return ((Date.now() - started) / 1000).toFixed(2);
}

/** Prints rows as an aligned text table, indented under the step lines. */
export function table(headers: string[], rows: string[][]): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    `           ${cells.map((c, i) => c.padEnd(widths[i])).join('  ')}`.trimEnd();
  const out = [line(headers), line(widths.map((w) => '─'.repeat(w)))];
  if (rows.length === 0) out.push('           (no passing instances)');
  else out.push(...rows.map(line));
  process.stdout.write(`${out.join('\n')}\n`);
}
