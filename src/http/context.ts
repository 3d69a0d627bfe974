/** What the routes are given: services and repositories, never the pool itself. */
import type { Config } from '../config.js';
import type { ReadRouter } from '../db/read-router.js';
import type { Metrics } from '../metrics.js';
import type { Repositories } from '../repositories/index.js';
import type { AuthService } from '../services/auth-service.js';
import type { GoogleIdTokenVerifier } from '../services/google-id-token.js';
import type { RunService } from '../services/run-service.js';
import type { ScheduleService } from '../services/schedule-service.js';
import type { ScriptService } from '../services/script-service.js';
import type { UserService } from '../services/user-service.js';

export interface AppContext {
  config: Config;
  repos: Repositories;
  auth: AuthService;
  /** Google sign-in; null when GOOGLE_CLIENT_ID is not set. */
  google: GoogleIdTokenVerifier | null;
  users: UserService;
  scripts: ScriptService;
  schedules: ScheduleService;
  runs: RunService;
  metrics: Metrics;
  /** Migration names on disk, for readiness (current / pending). */
  migrations: string[];
  /** Routes read-mostly queries to the read replica (DATABASE_READ_URL); absent without one. */
  readRouter?: ReadRouter;
}

export interface RouteOptions {
  ctx: AppContext;
}
