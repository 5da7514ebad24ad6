import { CronTime } from 'cron';

/** Look-back spans for the latest instant at or before a time: from a second to five years. */
const SPANS_MS = [
  1_000,
  60_000,
  3_600_000,
  86_400_000,
  31 * 86_400_000,
  366 * 86_400_000,
  5 * 366 * 86_400_000,
];

/** Instants listed, at most, for a gap (a 1-second job stopped for a day would have 86,400). */
export const MAX_LISTED_INSTANTS = 1_000;

export interface Instants {
  /** Ascending. */
  instants: Date[];
  /** More instants lie in the range than were listed. */
  more: boolean;
}

/**
 * The instants of a cron expression in a time zone, computed from the expression alone (the same
 * on every instance), not from when a timer ran. Throws `cron`'s error for an invalid expression
 * or time zone.
 */
export class JobSchedule {
  private readonly time: CronTime;

  constructor(
    expression: string,
    private readonly timeZone?: string,
  ) {
    this.time = new CronTime(expression, timeZone);
  }

  /** The first instant strictly after `after`. */
  next(after: Date): Date {
    return this.time.getNextDateFrom(after, this.timeZone).toJSDate();
  }

  /** The latest instant at or before `at`; `undefined` when none in five years. */
  latestAtOrBefore(at: Date): Date | undefined {
    for (const span of SPANS_MS) {
      let latest: Date | undefined;
      for (let t = this.next(new Date(at.getTime() - span)); t <= at; t = this.next(t)) latest = t;
      if (latest) return latest;
    }
    return undefined;
  }

  /** The instants in (`after`, `before`), at most `MAX_LISTED_INSTANTS`. */
  between(after: Date, before: Date): Instants {
    const instants: Date[] = [];
    for (let t = this.next(after); t < before; t = this.next(t)) {
      if (instants.length === MAX_LISTED_INSTANTS) return { instants, more: true };
      instants.push(t);
    }
    return { instants, more: false };
  }
}
