/**
 * Scripts: the row, the rules of an upload, and the status machine of API.md.
 * The machine is enforced in SQL (each transition is one guarded UPDATE, and
 * tg_scripts_status_transition refuses any other write); this module states it
 * once for TypeScript, and a test checks both agree.
 */

import type { ScriptStatus } from './enums.ts';
import { ValidationError } from './errors.ts';

/** A script as the API may show it: no server-side `file_path`, no logs. */
export interface Script {
  id: number;
  user_id: number;
  filename: string;
  original_filename: string;
  file_extension: ScriptExtension;
  file_size: number;
  sha256: string;
  status: ScriptStatus;
  exit_code: number | null;
  execution_time_seconds: number | null;
  memory_usage_mb: number | null;
  error_message: string | null;
  started_at: Date | null;
  completed_at: Date | null;
  created_at: Date;
  updated_at: Date;
  /** Whether its runs get the owner's IBKR credentials (PATCH /scripts/{id}). */
  ibkr_access: boolean;
  /** The latest run (its outcome is the one above); null before the first run. */
  last_run_id: number | null;
  /** Runs ever queued (retention does not lower it). */
  run_count: number;
}

export const SCRIPT_COLUMNS = [
  'id',
  'user_id',
  'filename',
  'original_filename',
  'file_extension',
  'file_size',
  'sha256',
  'status',
  'exit_code',
  'execution_time_seconds',
  'memory_usage_mb',
  'error_message',
  'started_at',
  'completed_at',
  'created_at',
  'updated_at',
  'ibkr_access',
  'last_run_id',
  'run_count',
] as const satisfies readonly (keyof Script)[];

export const SCRIPT_EXTENSIONS = ['.py', '.js', '.ts'] as const;
export type ScriptExtension = (typeof SCRIPT_EXTENSIONS)[number];
export const ORIGINAL_FILENAME_MAX_LENGTH = 255;

/**
 * Allowed transitions, `from → to`. `uploaded|completed|failed|cancelled → queued → running →
 * completed|failed|cancelled`, and `queued → cancelled`.
 */
export const SCRIPT_TRANSITIONS: Readonly<Record<ScriptStatus, readonly ScriptStatus[]>> = {
  uploaded: ['queued'],
  queued: ['running', 'cancelled'],
  running: ['completed', 'failed', 'cancelled'],
  completed: ['queued'],
  failed: ['queued'],
  cancelled: ['queued'],
};

const LEADING_TO = Object.fromEntries(
  (Object.keys(SCRIPT_TRANSITIONS) as ScriptStatus[]).map((to) => [
    to,
    Object.freeze(
      (Object.keys(SCRIPT_TRANSITIONS) as ScriptStatus[]).filter((from) =>
        SCRIPT_TRANSITIONS[from].includes(to),
      ),
    ),
  ]),
) as unknown as Readonly<Record<ScriptStatus, ScriptStatus[]>>;

/** The states a script may be in for `to` to be reached from it (computed once; do not modify). */
export function statusesLeadingTo(to: ScriptStatus): ScriptStatus[] {
  return LEADING_TO[to];
}

export function canTransition(from: ScriptStatus, to: ScriptStatus): boolean {
  return SCRIPT_TRANSITIONS[from].includes(to);
}

/** A script in these states has a live (or pending) run: it cannot be deleted or re-queued. */
export const ACTIVE_STATUSES: readonly ScriptStatus[] = ['queued', 'running'];
export const FINISHED_STATUSES: readonly ScriptStatus[] = ['completed', 'failed', 'cancelled'];

/** The extension of a file name, lower-cased, if it is one we run; otherwise null. */
export function scriptExtension(filename: string): ScriptExtension | null {
  const match = /\.[^./\\]+$/.exec(filename);
  const ext = match?.[0].toLowerCase();
  return (SCRIPT_EXTENSIONS as readonly string[]).includes(ext ?? '') ? (ext as ScriptExtension) : null;
}

/**
 * The client's file name reduced to harmless display text: the last path segment,
 * no control characters, no leading dots, at most 255 characters (keeping the
 * extension). It is never used to build a path: files are stored under a generated name.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: removing control characters is the point
const UNSAFE_CHARACTERS = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

export function sanitizeFilename(filename: string): string {
  const lastSegment = filename.split(/[/\\]/).pop() ?? '';
  // Control characters, and the bidirectional overrides that make `evil\u202Eyp.exe` look like `evilexe.py`.
  let name = lastSegment.replace(UNSAFE_CHARACTERS, '').trim();
  const extension = scriptExtension(name);
  name = name.replace(/^\.+/, '');
  // `.py` alone would become `py`: keep a name that still shows what the file is.
  if (extension !== null && name.toLowerCase() === extension.slice(1)) name = `script${extension}`;
  if (name.length === 0) name = 'script';
  const chars = [...name];
  if (chars.length > ORIGINAL_FILENAME_MAX_LENGTH) {
    const ext = scriptExtension(name) ?? '';
    name = chars.slice(0, ORIGINAL_FILENAME_MAX_LENGTH - ext.length).join('') + ext;
  }
  return name;
}

/** Execution metrics are never negative; numeric(10,3) and numeric(10,2) bound them above. */
export function assertExecutionMetrics(m: {
  execution_time_seconds?: number | null;
  memory_usage_mb?: number | null;
}): void {
  const problems: Array<{ path: string; message: string }> = [];
  // The largest values numeric(10,3) and numeric(10,2) hold (after rounding).
  const check = (path: string, value: number | null | undefined, max: number) => {
    if (value === null || value === undefined) return;
    if (!Number.isFinite(value) || value < 0 || value > max)
      problems.push({ path, message: `must be a number from 0 to ${max}` });
  };
  check('/execution_time_seconds', m.execution_time_seconds, 9_999_999.999);
  check('/memory_usage_mb', m.memory_usage_mb, 99_999_999.99);
  if (problems.length > 0) throw new ValidationError(problems);
}

/** The orders a list of scripts can have (`-` for descending). */
export const SCRIPT_SORTS = [
  'created_at',
  '-created_at',
  'execution_time_seconds',
  '-execution_time_seconds',
] as const;
export type ScriptSort = (typeof SCRIPT_SORTS)[number];
