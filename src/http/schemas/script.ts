import { Type } from '@sinclair/typebox';
import { SCRIPT_STATUSES } from '../../domain/enums.ts';
import { SCRIPT_EXTENSIONS } from '../../domain/script.ts';
import { DateTime, Nullable, NullableDateTime } from './common.ts';

export const ScriptStatus = Type.Union(
  SCRIPT_STATUSES.map((s) => Type.Literal(s)),
  { $id: 'ScriptStatus' },
);

/** A script as the API shows it: never the server's file_path, never the logs. */
export const Script = Type.Object(
  {
    id: Type.Integer(),
    user_id: Type.Integer(),
    filename: Type.String(),
    original_filename: Type.String(),
    file_extension: Type.Union(SCRIPT_EXTENSIONS.map((e) => Type.Literal(e))),
    file_size: Type.Integer(),
    sha256: Type.String(),
    status: Type.Ref(ScriptStatus),
    exit_code: Nullable(Type.Integer()),
    execution_time_seconds: Nullable(Type.Number()),
    memory_usage_mb: Nullable(Type.Number()),
    error_message: Nullable(Type.String()),
    started_at: NullableDateTime(),
    completed_at: NullableDateTime(),
    created_at: DateTime(),
    updated_at: DateTime(),
    ibkr_access: Type.Boolean({ description: "whether its runs get the owner's IBKR credentials" }),
    last_run_id: Nullable(
      Type.Integer({ description: 'the latest run, whose outcome the fields above are' }),
    ),
    run_count: Type.Integer({ description: 'runs ever queued (retention does not lower it)' }),
  },
  { $id: 'Script', additionalProperties: false },
);

export const ScriptOwner = Type.Object(
  { id: Type.Integer(), email: Type.String(), username: Type.String() },
  { $id: 'ScriptOwner', additionalProperties: false },
);

export const SCRIPT_SCHEMAS = [ScriptStatus, Script, ScriptOwner];
