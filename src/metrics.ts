/**
 * Prometheus metrics of one process, on a registry of its own (not prom-client's
 * global one), so several apps in one test process do not collide.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

export class Metrics {
  readonly registry = new Registry();

  readonly httpDuration = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'HTTP requests by method, route pattern and status code',
    labelNames: ['method', 'route', 'status_code'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });

  readonly queryDuration = new Histogram({
    name: 'db_query_duration_seconds',
    help: 'Database queries by repository method and outcome',
    labelNames: ['query', 'outcome'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
    registers: [this.registry],
  });

  readonly poolConnections = new Gauge({
    name: 'db_pool_connections',
    help: 'Connections this process holds, by state (from pg_stat_activity at scrape time)',
    labelNames: ['state'] as const,
    registers: [this.registry],
  });

  readonly poolMax = new Gauge({
    name: 'db_pool_max_connections',
    help: 'The configured pool size',
    registers: [this.registry],
  });

  readonly queriesInFlight = new Gauge({
    name: 'db_queries_in_flight',
    help: 'Queries sent or waiting for a connection',
    registers: [this.registry],
  });

  readonly scriptRuns = new Counter({
    name: 'script_runs_total',
    help: 'Finished script runs by outcome',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly scriptRunDuration = new Histogram({
    name: 'script_run_duration_seconds',
    help: 'Wall time of finished script runs by outcome',
    labelNames: ['outcome'] as const,
    buckets: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800],
    registers: [this.registry],
  });

  readonly queueDepth = new Gauge({
    name: 'script_queue_depth',
    help: 'Scripts waiting to run, by status (queued, running), at scrape time',
    labelNames: ['status'] as const,
    registers: [this.registry],
  });

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /** A query observer for Database (see src/db/database.ts). */
  readonly observeQuery = (name: string, seconds: number, ok: boolean): void => {
    cachedChild(this.queryChildren, this.queryDuration, `${name}|${ok}`, () => ({
      query: name,
      outcome: ok ? 'ok' : 'error',
    })).observe(seconds);
  };

  /** The run queue as sampled at scrape time (the API's and the worker's /metrics). */
  setQueueDepth(depth: { queued: number; running: number }): void {
    this.queueDepth.set({ status: 'queued' }, depth.queued);
    this.queueDepth.set({ status: 'running' }, depth.running);
  }

  /** Observes an HTTP request (see src/http/plugins/metrics.ts). */
  observeRequest(method: string, route: string, statusCode: number, seconds: number): void {
    cachedChild(this.httpChildren, this.httpDuration, `${method}|${route}|${statusCode}`, () => ({
      method,
      route,
      status_code: String(statusCode),
    })).observe(seconds);
  }

  private readonly queryChildren = new Map<string, Histogram.Internal<'query' | 'outcome'>>();
  private readonly httpChildren = new Map<string, Histogram.Internal<'method' | 'route' | 'status_code'>>();
}

/**
 * prom-client hashes the label object on every observe(); its children skip that.
 * They are kept per label set (bounded: route patterns, query names, statuses).
 */
function cachedChild<L extends string>(
  cache: Map<string, Histogram.Internal<L>>,
  histogram: Histogram<L>,
  key: string,
  labels: () => Partial<Record<L, string>>,
): Histogram.Internal<L> {
  let child = cache.get(key);
  if (child === undefined) {
    child = histogram.labels(labels());
    cache.set(key, child);
  }
  return child;
}
