/**
 * All repositories over one executor. `transaction` hands the callback the same
 * set bound to the transaction, so nothing inside can reach the pool by mistake.
 */
import type { Database, TransactionOptions } from '../db/database.ts';
import { IbkrLinkRepository } from './ibkr-link-repository.ts';
import { LoginAttemptRepository } from './login-attempt-repository.ts';
import { RateLimitRepository } from './rate-limit-repository.ts';
import { RunLeaseRepository } from './run-leases.ts';
import { RunOutcomeRepository } from './run-outcomes.ts';
import { RunOutputRepository } from './run-output.ts';
import { RunRepository } from './run-repository.ts';
import { ScheduleRepository } from './schedule-repository.ts';
import { ScriptListingRepository } from './script-listings.ts';
import { ScriptRepository } from './script-repository.ts';
import { StatsRepository } from './stats-repository.ts';
import { SystemRepository } from './system-repository.ts';
import { TokenRepository } from './token-repository.ts';
import { UserListingRepository } from './user-listings.ts';
import { UserRepository } from './user-repository.ts';

export class Repositories {
  readonly users: UserRepository;
  /** Pages, search and other reads of many users. */
  readonly userListings: UserListingRepository;
  /** Users' IBKR links and their encrypted tokens. */
  readonly ibkr: IbkrLinkRepository;
  readonly scripts: ScriptRepository;
  /** Pages and other listings of scripts. */
  readonly scriptListings: ScriptListingRepository;
  /** The executors' side of the runs: claims and leases. */
  readonly leases: RunLeaseRepository;
  /** How runs end, as their executors record it. */
  readonly outcomes: RunOutcomeRepository;
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
  readonly db: Database;

  constructor(db: Database) {
    this.db = db;
    this.users = new UserRepository(db);
    this.userListings = new UserListingRepository(db);
    this.ibkr = new IbkrLinkRepository(db);
    this.scripts = new ScriptRepository(db);
    this.scriptListings = new ScriptListingRepository(db);
    this.leases = new RunLeaseRepository(db);
    this.outcomes = new RunOutcomeRepository(db);
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
  RunOutcomeRepository,
  RunOutputRepository,
  RunRepository,
  ScheduleRepository,
  ScriptListingRepository,
  ScriptRepository,
  StatsRepository,
  SystemRepository,
  TokenRepository,
  UserListingRepository,
  UserRepository,
};
