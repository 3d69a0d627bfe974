/** What the health and metrics routes ask of the system: the database's status, a metrics scrape. */
import type { FastifyBaseLogger } from 'fastify';
import type { Metrics } from '../metrics.ts';
import type { Repositories } from '../repositories/index.ts';
import type { DatabaseStatus } from '../repositories/system-repository.ts';
import { scrape } from './metrics-scrape.ts';

export class SystemService {
  private readonly repos: Repositories;
  private readonly metrics: Metrics;

  constructor(repos: Repositories, metrics: Metrics) {
    this.repos = repos;
    this.metrics = metrics;
  }

  /** One round trip: server version, applied migrations, this process's connections. */
  databaseStatus(): Promise<DatabaseStatus> {
    return this.repos.system.status();
  }

  /** The metrics registry's text, sampled now (the pool too, for an API process). */
  metricsText(log: FastifyBaseLogger, options: { pool: boolean }): Promise<string> {
    return scrape(this.metrics, this.repos, log, options);
  }
}
