/**
 * Schedules: a cron expression in an IANA time zone that queues a run of its
 * script at every occurrence (API.md, Schedules). Parsing and occurrences come
 * from croner (pinned in package.json), never from our own cron parser; this
 * module decides what we accept and how DST reads.
 *
 * DST (croner's Vixie-cron rules, with `fixedTimeRule: 'no-wildcard'`):
 * - a fixed-time schedule (no `*` and no step in minute and hour, e.g. `30 2 * * *`)
 *   whose local time falls in the hour a spring-forward skips fires once, at the
 *   first minute after the gap (03:00 local); in the hour a fall-back repeats it
 *   fires once, at the first pass (the earlier UTC instant);
 * - an interval schedule (`*` or a step in minute or hour, e.g. `*\/15 * * * *`)
 *   follows real time: no occurrence inside the gap, and both passes of a
 *   repeated hour fire.
 */
import { Cron } from 'croner';
import { ValidationError } from './errors.ts';

/** A schedule as the API shows it. */
export interface Schedule {
  id: number;
  script_id: number;
  user_id: number;
  cron: string;
  timezone: string;
  enabled: boolean;
  /** The next occurrence not yet handled; null while disabled. */
  next_run_at: Date | null;
  last_run_id: number | null;
  last_fired_at: Date | null;
  last_skipped_at: Date | null;
  skipped_count: number;
  created_at: Date;
  updated_at: Date;
}

export const SCHEDULE_COLUMNS = [
  'id',
  'script_id',
  'user_id',
  'cron',
  'timezone',
  'enabled',
  'next_run_at',
  'last_run_id',
  'last_fired_at',
  'last_skipped_at',
  'skipped_count',
  'created_at',
  'updated_at',
] as const satisfies readonly (keyof Schedule)[];

/** At most this many schedules per script (409 TOO_MANY_SCHEDULES past it). */
export const MAX_SCHEDULES_PER_SCRIPT = 10;
export const CRON_MAX_LENGTH = 200;
export const TIMEZONE_MAX_LENGTH = 64;

// The characters croner reads in a field (digits, names, * / , - ? L W # +); the same
// rule is ck_script_schedules_cron_format in SQL.
const CRON_FIELD = /^[0-9A-Za-z*/,?#+-]+$/;
// An IANA name (Area/Location, or a single word such as UTC): never a bare offset such as
// "+05:00", which Intl accepts on newer Node versions but which has no DST rules.
const TIMEZONE_NAME = /^[A-Za-z][A-Za-z0-9_+/-]*$/;

const cronOptions = (timezone: string) =>
  ({ timezone, mode: '5-part', fixedTimeRule: 'no-wildcard', paused: true }) as const;

/**
 * A cron expression as stored: five fields (minute hour day-of-month month
 * day-of-week) separated by single spaces. Throws ValidationError on `/cron`.
 */
export function normalizeCron(input: string): string {
  const fields = input.trim().split(/\s+/).filter(Boolean);
  const fail = (message: string) => ValidationError.field('/cron', message);
  if (fields.length === 0) throw fail('must not be empty');
  if (fields.length === 6)
    throw fail('must have 5 fields (minute hour day-of-month month day-of-week); seconds are not supported');
  if (fields.length !== 5)
    throw fail(`must have 5 fields (minute hour day-of-month month day-of-week), not ${fields.length}`);
  if (!fields.every((f) => CRON_FIELD.test(f))) throw fail('contains a character cron does not use');
  const cron = fields.join(' ');
  if (cron.length > CRON_MAX_LENGTH) throw fail(`must be at most ${CRON_MAX_LENGTH} characters`);
  return cron;
}

/** Throws ValidationError on `/timezone` unless `timezone` is an IANA time zone this runtime knows. */
export function checkTimezone(timezone: string): string {
  const fail = () =>
    ValidationError.field('/timezone', 'must be an IANA time zone name, such as America/New_York or UTC');
  if (timezone.length === 0 || timezone.length > TIMEZONE_MAX_LENGTH || !TIMEZONE_NAME.test(timezone))
    throw fail();
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone });
  } catch {
    throw fail();
  }
  return timezone;
}

/** A parsed, validated schedule rule: its occurrences as UTC instants. */
export class CronRule {
  private readonly cron: Cron;

  readonly expression: string;
  readonly timezone: string;

  private constructor(expression: string, timezone: string) {
    this.expression = expression;
    this.timezone = timezone;
    this.cron = new Cron(expression, cronOptions(timezone));
  }

  /**
   * Validates both fields (each error names its field) and checks the rule ever
   * fires, so a schedule such as `0 0 31 2 *` is refused rather than stored idle.
   */
  static parse(cron: string, timezone: string, now: Date): CronRule {
    const expression = normalizeCron(cron);
    checkTimezone(timezone);
    let rule: CronRule;
    try {
      rule = new CronRule(expression, timezone);
    } catch (error) {
      const reason = (error as Error).message.replace(/^CronPattern:\s*/, '');
      throw ValidationError.field('/cron', `is not a valid cron expression: ${reason}`);
    }
    if (rule.nextAfter(now) === null) throw ValidationError.field('/cron', 'never fires');
    return rule;
  }

  /** A rule read back from a valid row: no validation beyond croner's own. */
  static stored(cron: string, timezone: string): CronRule {
    return new CronRule(cron, timezone);
  }

  /** The first occurrence strictly after `after` (minute precision), or null when there is none. */
  nextAfter(after: Date): Date | null {
    return this.cron.nextRun(after);
  }
}
