import { Type } from '@sinclair/typebox';
import { RUN_STATUSES, RUN_TRIGGERS } from '../../domain/enums.ts';
import { DateTime, Nullable, NullableDateTime } from './common.ts';

export const RunStatus = Type.Union(
  RUN_STATUSES.map((s) => Type.Literal(s)),
  { $id: 'RunStatus' },
);

export const RunTrigger = Type.Union(
  RUN_TRIGGERS.map((s) => Type.Literal(s)),
  { $id: 'RunTrigger' },
);

/** One execution of a script, kept after it ends (API.md, Run). */
export const Run = Type.Object(
  {
    id: Type.Integer(),
    script_id: Type.Integer(),
    user_id: Type.Integer(),
    trigger: Type.Ref(RunTrigger),
    schedule_id: Nullable(Type.Integer()),
    status: Type.Ref(RunStatus),
    script_sha256: Type.String({ description: 'the content the run ran' }),
    exit_code: Nullable(Type.Integer()),
    execution_time_seconds: Nullable(Type.Number()),
    cpu_time_seconds: Nullable(Type.Number()),
    memory_usage_mb: Nullable(Type.Number()),
    error_message: Nullable(Type.String()),
    log_bytes: Type.Integer({ description: 'bytes of output stored' }),
    log_truncated: Type.Boolean({ description: 'the output was cut at MAX_LOG_BYTES' }),
    queued_at: DateTime(),
    started_at: NullableDateTime(),
    completed_at: NullableDateTime(),
  },
  { $id: 'Run', additionalProperties: false },
);

export const RunPage = Type.Object(
  {
    runs: Type.Array(Type.Ref(Run)),
    next_cursor: Type.Union([Type.String(), Type.Null()]),
  },
  { $id: 'RunPage', additionalProperties: false },
);

export const RUN_SCHEMAS = [RunStatus, RunTrigger, Run, RunPage];
