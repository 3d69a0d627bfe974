/**
 * Admin statistics (GET /stats/*). Each is one read of the striped counters or one
 * bounded query (stats-repository.ts), served by the read replica when there is one.
 */
import { type OffsetPage, type PageRequest, PER_PAGE_DEFAULT } from '../domain/paging.ts';
import type { Repositories } from '../repositories/index.ts';
import type {
  PerformanceStats,
  ProviderStats,
  ScriptStats,
  StatusStats,
  UserScriptCount,
  UserStats,
} from '../repositories/stats-repository.ts';

/** GET /stats/users/top without `limit`. */
export const TOP_USERS_DEFAULT = 10;

export class StatsService {
  private readonly repos: Repositories;

  constructor(repos: Repositories) {
    this.repos = repos;
  }

  scripts(): Promise<ScriptStats> {
    return this.repos.stats.scriptStats();
  }

  scriptsByStatus(): Promise<StatusStats[]> {
    return this.repos.stats.scriptsByStatus();
  }

  performance(): Promise<PerformanceStats> {
    return this.repos.stats.performance();
  }

  users(): Promise<UserStats> {
    return this.repos.stats.userStats();
  }

  usersByProvider(): Promise<ProviderStats[]> {
    return this.repos.stats.usersByProvider();
  }

  topUsers(limit = TOP_USERS_DEFAULT): Promise<UserScriptCount[]> {
    return this.repos.stats.topUsers(limit);
  }

  /** Every user with its number of scripts, zero included: an offset page. */
  userScriptCounts(request: Omit<PageRequest, 'cursor'>): Promise<OffsetPage<Required<UserScriptCount>>> {
    return this.repos.stats.userScriptCounts({
      page: request.page ?? 1,
      per_page: request.per_page ?? PER_PAGE_DEFAULT,
    });
  }
}
