/**
 * Housekeeping that keeps tables from growing for ever: expired and revoked
 * tokens, stale sign-in attempts, ended rate-limit windows, and the output of runs older than LOG_RETENTION_DAYS. Runs at start
 * and hourly; every process may run it (each statement is idempotent).
 */
import type { Logger } from 'pino';
import { pruneRateLimits } from './http/rate-limit-store.js';
import type { Repositories } from './repositories/index.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

export async function runMaintenance(
  repos: Repositories,
  logRetentionDays: number,
  log: Logger,
): Promise<void> {
  const now = Date.now();
  const tokens = await repos.tokens.prune(new Date(now - DAY));
  const logs = await repos.scripts.pruneLogs(new Date(now - logRetentionDays * DAY));
  // A day is the longest LOGIN_FAILURE_WINDOW_SECONDS: older windows count for nothing.
  const loginAttempts = await repos.loginAttempts.prune(DAY / 1000);
  const rateLimits = await pruneRateLimits(repos.db);
  if (tokens > 0 || logs > 0 || loginAttempts > 0 || rateLimits > 0)
    log.info({ tokens, logs, loginAttempts, rate_limits: rateLimits }, 'maintenance pruned old rows');
}

export function startMaintenance(
  repos: Repositories,
  logRetentionDays: number,
  log: Logger,
): { stop(): void } {
  const run = () =>
    runMaintenance(repos, logRetentionDays, log).catch((err) => log.warn({ err }, 'maintenance failed'));
  void run();
  const timer = setInterval(run, HOUR);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
