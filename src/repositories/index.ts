/**
 * All repositories over one executor. `transaction` hands the callback the same
 * set bound to the transaction, so nothing inside can reach the pool by mistake.
 */
import type { Database, TransactionOptions } from '../db/database.js';
import { IbkrLinkRepository } from './ibkr-link-repository.js';
import { LoginAttemptRepository } from './login-attempt-repository.js';
import { RateLimitRepository } from './rate-limit-repository.js';
import { RunLeaseRepository } from './run-leases.js';
import { RunOutputRepository } from './run-output.js';
import { RunRepository } from './run-repository.js';
import { ScheduleRepository } from './schedule-repository.js';
import { ScriptRepository } from './script-repository.js';
import { StatsRepository } from './stats-repository.js';
import { SystemRepository } from './system-repository.js';
import { TokenRepository } from './token-repository.js';
import { UserRepository } from './user-repository.js';

export class Repositories {
  readonly users: UserRepository;
  /** Users' IBKR links and their encrypted tokens. */
  readonly ibkr: IbkrLinkRepository;
  readonly scripts: ScriptRepository;
  /** The executors' side of the runs: claims, leases, outcomes. */
  readonly leases: RunLeaseRepository;
  /** Runs' output: appended by executors, read and followed by clients. */
  readonly output: RunOutputRepository;
  readonly runs: RunRepository;
  readonly schedules: ScheduleRepository;
  readonly stats: StatsRepository;
  readonly system: SystemRepository;
  readonly tokens: TokenRepository;
  readonly loginAttempts: LoginAttemptRepository;
  readonly rateLimits: RateLimitRepository;

  /** Read-mostly methods query `db.reader` (a read replica, when configured: src/db/read-router.ts). */
  constructor(readonly db: Database) {
    this.users = new UserRepository(db);
    this.ibkr = new IbkrLinkRepository(db);
    this.scripts = new ScriptRepository(db);
    this.leases = new RunLeaseRepository(db);
    this.output = new RunOutputRepository(db);
    this.runs = new RunRepository(db);
    this.schedules = new ScheduleRepository(db);
    this.stats = new StatsRepository(db);
    this.system = new SystemRepository(db);
    this.tokens = new TokenRepository(db);
    this.loginAttempts = new LoginAttemptRepository(db);
    this.rateLimits = new RateLimitRepository(db);
  }

  transaction<T>(fn: (tx: Repositories) => Promise<T>, options?: TransactionOptions): Promise<T> {
    return this.db.transaction((tx) => fn(new Repositories(tx)), options);
  }
}

export {
  IbkrLinkRepository,
  LoginAttemptRepository,
  RateLimitRepository,
  RunLeaseRepository,
  RunOutputRepository,
  RunRepository,
  ScheduleRepository,
  ScriptRepository,
  StatsRepository,
  SystemRepository,
  TokenRepository,
  UserRepository,
};
