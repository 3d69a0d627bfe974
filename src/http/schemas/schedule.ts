import { Type } from '@sinclair/typebox';
import { CRON_MAX_LENGTH, TIMEZONE_MAX_LENGTH } from '../../domain/schedule.ts';
import { DateTime, Nullable, NullableDateTime } from './common.ts';

/** A schedule as the API shows it (API.md, the Schedule resource). */
export const Schedule = Type.Object(
  {
    id: Type.Integer(),
    script_id: Type.Integer(),
    user_id: Type.Integer(),
    cron: Type.String({ description: 'five fields: minute hour day-of-month month day-of-week' }),
    timezone: Type.String({ description: 'IANA time zone the cron expression is read in' }),
    enabled: Type.Boolean(),
    next_run_at: NullableDateTime(),
    last_run_id: Nullable(Type.Integer()),
    last_fired_at: NullableDateTime(),
    last_skipped_at: NullableDateTime(),
    skipped_count: Type.Integer(),
    created_at: DateTime(),
    updated_at: DateTime(),
  },
  { $id: 'Schedule', additionalProperties: false },
);

// Lengths are the schema's; what the text means (five fields, a known zone) is the
// domain's, so that the 400 names the field and says what is wrong with it.
const Cron = Type.String({
  maxLength: CRON_MAX_LENGTH,
  description: 'minute hour day-of-month month day-of-week, e.g. `30 9 * * 1-5`; no seconds field',
});
const Timezone = Type.String({
  maxLength: TIMEZONE_MAX_LENGTH,
  description: 'an IANA time zone, e.g. America/New_York',
});

export const NewSchedule = Type.Object(
  { cron: Cron, timezone: Timezone, enabled: Type.Optional(Type.Boolean({ default: true })) },
  { additionalProperties: false },
);

export const ScheduleChange = Type.Object(
  { cron: Type.Optional(Cron), timezone: Type.Optional(Timezone), enabled: Type.Optional(Type.Boolean()) },
  { additionalProperties: false },
);

export const SCHEDULE_SCHEMAS = [Schedule];
