import { isPlainObject, type ViolationCollector } from '../protocol/input.reader.js';
import type { DeclaredJob } from './cluster-cron.decorator.js';
import { JobSchedule } from './job-schedule.js';
import type { JobDefinition } from './job.types.js';
import { DEFAULT_MISFIRE_GRACE_MS } from './schedule.constants.js';

const KNOWN_OPTIONS = new Set([
  'name',
  'timeZone',
  'delivery',
  'misfire',
  'misfireGraceMs',
  'overlap',
]);
const DELIVERIES = ['at-most-once', 'at-least-once'];
const MISFIRES = ['run-once', 'skip'];

/**
 * A `@ClusterCron` of `owner` (a class name) checked: each violation under
 * `<Class>.<method>.<field>`; the job and its schedule when valid.
 */
export function readJob(
  declared: DeclaredJob,
  owner: string,
  method: unknown,
  out: ViolationCollector,
): { definition: JobDefinition; schedule: JobSchedule } | undefined {
  const at = `${owner}.${String(declared.key)}`;
  const before = out.violations.length;
  if (typeof method !== 'function')
    out.add(at, `${at} must be a method to be a @ClusterCron handler`);
  const options: Record<string, unknown> = isPlainObject(declared.options) ? declared.options : {};
  if (!isPlainObject(declared.options)) out.add(`${at}.options`, `${at}.options must be an object`);
  for (const key of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(key)) out.add(`${at}.${key}`, `${at}.${key} is not a known option`);
  }
  const { name, timeZone, delivery, misfire, misfireGraceMs, overlap } = options;
  if (typeof name !== 'string' || name.trim() === '') {
    out.add(`${at}.name`, `${at}.name must be a non-empty string`);
  }
  if (timeZone !== undefined && (typeof timeZone !== 'string' || timeZone === '')) {
    out.add(`${at}.timeZone`, `${at}.timeZone must be an IANA time zone name`);
  }
  if (delivery !== undefined && !DELIVERIES.includes(delivery as string)) {
    out.add(`${at}.delivery`, `${at}.delivery must be one of ${DELIVERIES.join(', ')}`);
  }
  if (misfire !== undefined && !MISFIRES.includes(misfire as string)) {
    out.add(`${at}.misfire`, `${at}.misfire must be one of ${MISFIRES.join(', ')}`);
  }
  if (
    misfireGraceMs !== undefined &&
    !(Number.isInteger(misfireGraceMs) && (misfireGraceMs as number) >= 0)
  ) {
    out.add(`${at}.misfireGraceMs`, `${at}.misfireGraceMs must be an integer ≥ 0`);
  }
  if (overlap !== undefined && overlap !== 'skip') {
    out.add(`${at}.overlap`, `${at}.overlap must be 'skip'`);
  }
  const schedule = readSchedule(declared.expression, timeZone, at, out);
  if (out.violations.length > before || !schedule) return undefined;
  return {
    definition: {
      name: name as string,
      expression: declared.expression as string,
      timeZone: timeZone as string | undefined,
      delivery: (delivery as JobDefinition['delivery']) ?? 'at-most-once',
      misfire: (misfire as JobDefinition['misfire']) ?? 'run-once',
      misfireGraceMs: (misfireGraceMs as number | undefined) ?? DEFAULT_MISFIRE_GRACE_MS,
      overlap: 'skip',
    },
    schedule,
  };
}

/** The expression alone first, so that a bad time zone is not blamed on a bad expression. */
function readSchedule(
  expression: unknown,
  timeZone: unknown,
  at: string,
  out: ViolationCollector,
): JobSchedule | undefined {
  if (typeof expression !== 'string' || expression.trim() === '') {
    out.add(`${at}.expression`, `${at}.expression must be a cron expression string`);
    return undefined;
  }
  try {
    new JobSchedule(expression);
  } catch (error) {
    out.add(
      `${at}.expression`,
      `${at}.expression "${expression}" is not a valid cron expression: ${(error as Error).message}`,
    );
    return undefined;
  }
  if (typeof timeZone !== 'string' && timeZone !== undefined) return undefined;
  try {
    return new JobSchedule(expression, timeZone);
  } catch (error) {
    out.add(
      `${at}.timeZone`,
      `${at}.timeZone "${String(timeZone)}" is not a valid time zone: ${(error as Error).message}`,
    );
    return undefined;
  }
}
