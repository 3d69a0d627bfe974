/** What the health and metrics routes ask of the system: the database's status, a metrics scrape. */
import type { FastifyBaseLogger } from 'fastify';
import type { Metrics } from '../metrics.js';
import type { Repositories } from '../repositories/index.js';
import type { DatabaseStatus } from '../repositories/system-repository.js';
import { scrape } from './metrics-scrape.js';

export class SystemService {
  constructor(
    private readonly repos: Repositories,
    private readonly metrics: Metrics,
  ) {}

  /** One round trip: server version, applied migrations, this process's connections. */
  databaseStatus(): Promise<DatabaseStatus> {
    return this.repos.system.status();
  }

  /** The metrics registry's text, sampled now (the pool too, for an API process). */
  metricsText(log: FastifyBaseLogger, options: { pool: boolean }): Promise<string> {
    return scrape(this.metrics, this.repos, log, options);
  }
}
