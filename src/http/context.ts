/**
 * What the routes are given: services only — never a repository or the pool (the
 * layer test, test/architecture.test.ts, keeps it so).
 */
import type { Config } from '../config.ts';
import type { Metrics } from '../metrics.ts';
import type { AuthService } from '../services/auth-service.ts';
import type { GoogleIdTokenVerifier } from '../services/google-id-token.ts';
import type { RunService } from '../services/run-service.ts';
import type { ScheduleService } from '../services/schedule-service.ts';
import type { ScriptService } from '../services/script-service.ts';
import type { StatsService } from '../services/stats-service.ts';
import type { SystemService } from '../services/system-service.ts';
import type { UserService } from '../services/user-service.ts';
import type { RateLimitCounter } from './rate-limit-store.ts';

export interface AppContext {
  config: Config;
  auth: AuthService;
  /** Google sign-in; null when GOOGLE_CLIENT_ID is not set. */
  google: GoogleIdTokenVerifier | null;
  users: UserService;
  scripts: ScriptService;
  schedules: ScheduleService;
  runs: RunService;
  stats: StatsService;
  system: SystemService;
  /** The shared rate-limit counters (every API process counts in the same place). */
  rateLimits: RateLimitCounter;
  metrics: Metrics;
  /** Migration names on disk, for readiness (current / pending). */
  migrations: string[];
  /** Routes read-mostly queries to the read replica (DATABASE_READ_URL); absent without one. */
  readRouter?: ReadRouting;
}

export interface RouteOptions {
  ctx: AppContext;
}

/** What a request has told the read router: who asks, and whether it may write. */
export interface ReadScope {
  /** The authenticated caller, once known. */
  userId: number | null;
  /** The request may write (not GET/HEAD/OPTIONS): its reads go to the primary. */
  writes: boolean;
}

/** The read replica as readiness reports it. */
export interface ReplicaStatus {
  state: 'ok' | 'lagging' | 'down' | 'unknown';
  /** Seconds the replica is behind the primary; null while it is down or unknown. */
  lag_seconds: number | null;
  max_lag_seconds: number;
}

/**
 * What HTTP needs of the read router (src/db/read-router.ts, which the composition root
 * hands in): describe each request, so a user's reads keep up with its own writes, and
 * report the replica. Routes never choose a pool.
 */
export interface ReadRouting {
  withScope<T>(scope: ReadScope, fn: () => T): T;
  /** After a request that may have written: pins its user to the primary until the replica has replayed it. */
  wrote(scope: ReadScope): Promise<void>;
  /** Checks the replica now (one probe shared by concurrent callers). */
  probe(): Promise<ReplicaStatus>;
  /** The last known figures, without a round trip. */
  status(): ReplicaStatus;
}
