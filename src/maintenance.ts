/**
 * Housekeeping that keeps tables from growing for ever: expired and revoked tokens,
 * stale sign-in attempts, ended rate-limit windows, and runs (with their output) that finished more than RUN_RETENTION_DAYS ago, except
 * each script's latest run. Runs at start and hourly; every process may run it (each
 * statement is idempotent, and the run purge skips rows another process holds).
 *
 * Runs go in batches of RUN_PURGE_BATCH, each one short statement of its own (never one
 * long transaction), with a pause between batches so that the API's writes to the same
 * tables never wait long behind the purge.
 */
import type { Logger } from 'pino';
import type { Repositories } from './repositories/index.ts';
import type { PurgePosition } from './repositories/run-history.ts';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
export const RUN_PURGE_BATCH = 500;
export const RUN_PURGE_PAUSE_MS = 50;

export interface MaintenanceOptions {
  runRetentionDays: number;
  /** Runs deleted per statement. */
  batch?: number;
  /** Pause between batches. */
  pauseMs?: number;
  /** Stop early (shutdown). */
  signal?: AbortSignal;
}

/** Deletes runs that finished before `before` (not a script's latest), batch by batch; returns how many. */
export async function purgeRuns(
  repos: Repositories,
  before: Date,
  options: { batch?: number; pauseMs?: number; signal?: AbortSignal } = {},
): Promise<number> {
  const batch = options.batch ?? RUN_PURGE_BATCH;
  let total = 0;
  let position: PurgePosition = null;
  while (!options.signal?.aborted) {
    const result = await repos.runs.purgeExpired(before, batch, position);
    total += result.deleted;
    position = result.position;
    if (result.deleted < batch) break;
    await new Promise((resolve) => setTimeout(resolve, options.pauseMs ?? RUN_PURGE_PAUSE_MS));
  }
  return total;
}

export async function runMaintenance(
  repos: Repositories,
  options: MaintenanceOptions,
  log: Logger,
): Promise<void> {
  const now = Date.now();
  const tokens = await repos.tokens.prune(new Date(now - DAY));
  const runs = await purgeRuns(repos, new Date(now - options.runRetentionDays * DAY), options);
  // A day is the longest LOGIN_FAILURE_WINDOW_SECONDS: older windows count for nothing.
  const loginAttempts = await repos.loginAttempts.prune(DAY / 1000);
  const rateLimits = await repos.rateLimits.prune();
  if (tokens > 0 || runs > 0 || loginAttempts > 0 || rateLimits > 0)
    log.info({ tokens, runs, loginAttempts, rate_limits: rateLimits }, 'maintenance pruned old rows');
}

export function startMaintenance(
  repos: Repositories,
  runRetentionDays: number,
  log: Logger,
): { stop(): void } {
  const abort = new AbortController();
  let running = false;
  const run = () => {
    if (running) return; // an hour was not enough for the last pass: let it finish
    running = true;
    runMaintenance(repos, { runRetentionDays, signal: abort.signal }, log)
      .catch((err) => log.warn({ err }, 'maintenance failed'))
      .finally(() => {
        running = false;
      });
  };
  run();
  const timer = setInterval(run, HOUR);
  timer.unref();
  return {
    stop: () => {
      clearInterval(timer);
      abort.abort();
    },
  };
}
