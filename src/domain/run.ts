/**
 * Runs: one execution of a script, kept after it ends (API.md, Run). The status
 * machine is enforced in SQL (tg_script_runs_status_transition and guarded UPDATEs);
 * this module states it once for TypeScript.
 */
import type { RunStatus, RunTrigger } from './enums.ts';

/** A run as the API shows it: no executor or lease columns. */
export interface Run {
  id: number;
  script_id: number;
  user_id: number;
  trigger: RunTrigger;
  schedule_id: number | null;
  status: RunStatus;
  script_sha256: string;
  exit_code: number | null;
  execution_time_seconds: number | null;
  cpu_time_seconds: number | null;
  memory_usage_mb: number | null;
  error_message: string | null;
  log_bytes: number;
  log_truncated: boolean;
  queued_at: Date;
  started_at: Date | null;
  completed_at: Date | null;
}

export const RUN_COLUMNS = [
  'id',
  'script_id',
  'user_id',
  'trigger',
  'schedule_id',
  'status',
  'script_sha256',
  'exit_code',
  'execution_time_seconds',
  'cpu_time_seconds',
  'memory_usage_mb',
  'error_message',
  'log_bytes',
  'log_truncated',
  'queued_at',
  'started_at',
  'completed_at',
] as const satisfies readonly (keyof Run)[];

/** Allowed transitions of a run, `from → to`. */
export const RUN_TRANSITIONS: Readonly<Record<RunStatus, readonly RunStatus[]>> = {
  queued: ['running', 'cancelled'],
  running: ['completed', 'failed', 'cancelled'],
  completed: [],
  failed: [],
  cancelled: [],
};

/** The states a run may be in for `to` to be reached from it. */
export function runStatusesLeadingTo(to: RunStatus): RunStatus[] {
  return (Object.keys(RUN_TRANSITIONS) as RunStatus[]).filter((from) => RUN_TRANSITIONS[from].includes(to));
}

/** A run in these states is live: its script cannot be queued again or deleted. */
export const LIVE_RUN_STATUSES: readonly RunStatus[] = ['queued', 'running'];
export const FINISHED_RUN_STATUSES: readonly RunStatus[] = ['completed', 'failed', 'cancelled'];
