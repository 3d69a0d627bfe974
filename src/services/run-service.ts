/**
 * Runs, as the API uses them: queue a run (execute), cancel one, read runs and their
 * output, follow a run's output as it is written. Who may do what is decided here
 * (someone else's run or script is not found; admins reach everyone's); each change
 * is one statement of RunRepository, which also keeps the script's summary.
 */

import type { RunStatus, RunTrigger } from '../domain/enums.ts';
import { ForbiddenError, ValidationError } from '../domain/errors.ts';
import { type CursorPage, PER_PAGE_DEFAULT } from '../domain/paging.ts';
import type { Run } from '../domain/run.ts';
import type { Script } from '../domain/script.ts';
import type { Repositories } from '../repositories/index.ts';
import type { LogState } from '../repositories/run-output.ts';
import { type Principal, scopeOf } from './auth-service.ts';

export interface RunListQuery {
  script_id?: number;
  status?: RunStatus;
  trigger?: RunTrigger;
  since?: Date;
  /** Admins only: this user's runs. */
  user_id?: number;
  /** Admins only: everyone's runs. */
  all?: boolean;
  /** Empty or absent: the first page. */
  cursor?: string;
  per_page?: number;
}

/** A follower of one run's output: the first state, then `next()` for what came since. */
export interface LogFollow {
  /** The run followed; null for a script that has never run. */
  runId: number | null;
  first: LogState;
  next(): Promise<LogState>;
}

export class RunService {
  private readonly repos: Repositories;
  private readonly maxActive: number;

  constructor(repos: Repositories, maxActive: number) {
    this.repos = repos;
    this.maxActive = maxActive;
  }

  /** POST /scripts/{id}/execute: a queued run (409 while one is live, 429 past the per-user cap). */
  execute(principal: Principal, scriptId: number): Promise<Run> {
    return this.repos.runs.queue(scriptId, { ownerId: scopeOf(principal), maxActive: this.maxActive });
  }

  /** POST /runs/{id}/cancel. */
  cancel(principal: Principal, runId: number): Promise<Run> {
    return this.repos.runs.cancel(runId, scopeOf(principal));
  }

  /** POST /scripts/{id}/cancel: the script's live run; answers the script. */
  cancelScript(principal: Principal, scriptId: number): Promise<Script> {
    return this.repos.runs.cancelScript(scriptId, scopeOf(principal));
  }

  get(principal: Principal, runId: number): Promise<Run> {
    return this.repos.runs.getById(runId, scopeOf(principal));
  }

  /**
   * GET /runs: own runs; an admin's too by default, one user's with `user_id`, everyone's
   * with `all` (not both). A user asking for others' is FORBIDDEN.
   */
  async list(principal: Principal, query: RunListQuery): Promise<CursorPage<Run>> {
    const { user_id, all } = query;
    const othersAsked = all === true || (user_id !== undefined && user_id !== principal.user_id);
    if (othersAsked && principal.role !== 'admin')
      throw new ForbiddenError('only admins may list runs of other users');
    if (user_id !== undefined && all === true)
      throw ValidationError.field('/all', 'cannot be combined with user_id');
    return this.repos.runs.list(
      {
        user_id: all === true ? undefined : (user_id ?? principal.user_id),
        script_id: query.script_id,
        status: query.status,
        trigger: query.trigger,
        since: query.since,
      },
      query.cursor ? query.cursor : null,
      query.per_page ?? PER_PAGE_DEFAULT,
    );
  }

  /** GET /scripts/{id}/runs: the script's runs, newest first (404 for someone else's script). */
  async listForScript(
    principal: Principal,
    scriptId: number,
    page: { cursor?: string; per_page?: number },
  ): Promise<CursorPage<Run>> {
    const script = await this.repos.scripts.getById(scriptId, scopeOf(principal));
    return this.repos.runs.list(
      { script_id: script.id, user_id: script.user_id },
      page.cursor ? page.cursor : null,
      page.per_page ?? PER_PAGE_DEFAULT,
    );
  }

  /** A run's whole output, or its last `tail` lines. */
  async logs(principal: Principal, runId: number, tail?: number): Promise<string> {
    const { logs } = await this.repos.output.readLogs(runId, scopeOf(principal));
    return tailLines(logs, tail);
  }

  /** The output of a script's latest run ('' before its first run). */
  async scriptLogs(principal: Principal, scriptId: number, tail?: number): Promise<string> {
    const { logs } = await this.repos.output.readScriptLogs(scriptId, scopeOf(principal));
    return tailLines(logs, tail);
  }

  /** Starts following a run's output (404 for someone else's run). */
  async follow(principal: Principal, runId: number): Promise<LogFollow> {
    return this.follower(runId, scopeOf(principal));
  }

  /**
   * Starts following a script's latest run (the run it is at now; a run queued later is
   * another run). A script that never ran answers at once as finished, with status `uploaded`.
   */
  async followScript(principal: Principal, scriptId: number): Promise<LogFollow> {
    const owner = scopeOf(principal);
    const { status, last_run_id } = await this.repos.output.readScriptLogs(scriptId, owner);
    if (last_run_id === null) {
      const state: LogState = { status, exit_code: null, chunks: [], finished: true };
      return { runId: null, first: state, next: async () => state };
    }
    return this.follower(last_run_id, owner);
  }

  private async follower(runId: number, owner: number | undefined): Promise<LogFollow> {
    const output = this.repos.output;
    let lastSeq = -1;
    const read = async () => {
      const state = await output.followLogs(runId, lastSeq, owner);
      lastSeq = state.chunks.at(-1)?.seq ?? lastSeq;
      return state;
    };
    const first = await read();
    return { runId, first, next: read };
  }
}

/** The last `n` lines of `text` (all of it when n is undefined). */
export function tailLines(text: string, n: number | undefined): string {
  if (n === undefined) return text;
  if (n <= 0) return '';
  const lines = text.split('\n');
  const trailingNewline = text.endsWith('\n');
  if (trailingNewline) lines.pop();
  return lines.slice(-n).join('\n') + (trailingNewline && lines.length > 0 ? '\n' : '');
}
