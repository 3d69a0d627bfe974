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

  /** Every query's duration: observed on the hot path, so without prom-client's per-call work. */
  readonly queryDuration = new QueryDurationHistogram(
    'db_query_duration_seconds',
    'Database queries by repository method and outcome',
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
    this.registry,
  );

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
    this.queryDuration.observe(name, seconds, ok);
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

/** Bucket counts (not cumulative; the last one is +Inf), sum and count of one label set. */
interface Series {
  buckets: Float64Array;
  sum: number;
  count: number;
}

interface MetricValue {
  labels: Record<string, string | number>;
  sharedLabels?: Record<string, string>;
  value: number;
  metricName: string;
}

/**
 * A histogram labelled by query name and outcome, registered in a prom-client registry and
 * exported in exactly the format of prom-client's Histogram. Observing is a Map lookup by
 * name, a short loop over the bounds and three additions — prom-client's `observe` validates
 * the labels and hashes them into a string on every call, even through a child.
 */
export class QueryDurationHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly series = new Map<string, { ok: Series | undefined; error: Series | undefined }>();

  readonly name: string;
  readonly help: string;
  private readonly bounds: readonly number[];

  constructor(name: string, help: string, bounds: readonly number[], registry: Registry) {
    this.name = name;
    this.help = help;
    this.bounds = bounds;
    registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0]);
  }

  observe(query: string, seconds: number, ok: boolean): void {
    let byOutcome = this.series.get(query);
    if (byOutcome === undefined) {
      byOutcome = { ok: undefined, error: undefined };
      this.series.set(query, byOutcome);
    }
    let series = ok ? byOutcome.ok : byOutcome.error;
    if (series === undefined) {
      series = { buckets: new Float64Array(this.bounds.length + 1), sum: 0, count: 0 };
      if (ok) byOutcome.ok = series;
      else byOutcome.error = series;
    }
    const bounds = this.bounds;
    let b = 0;
    while (b < bounds.length && seconds > (bounds[b] as number)) b++;
    series.buckets[b] = (series.buckets[b] as number) + 1;
    series.sum += seconds;
    series.count++;
  }

  reset(): void {
    this.series.clear();
  }

  /** As prom-client's Histogram#getForPromString: labels of the series shared, `le` per bucket. */
  getForPromString(): {
    name: string;
    help: string;
    type: string;
    values: MetricValue[];
    aggregator: string;
  } {
    const values: MetricValue[] = [];
    for (const [query, byOutcome] of this.series) {
      for (const [outcome, series] of [
        ['ok', byOutcome.ok],
        ['error', byOutcome.error],
      ] as const) {
        if (series === undefined) continue;
        const sharedLabels = { query, outcome };
        let cumulative = 0;
        this.bounds.forEach((bound, i) => {
          cumulative += series.buckets[i] as number;
          values.push({
            labels: { le: bound },
            sharedLabels,
            value: cumulative,
            metricName: `${this.name}_bucket`,
          });
        });
        values.push(
          { labels: { le: '+Inf' }, sharedLabels, value: series.count, metricName: `${this.name}_bucket` },
          { labels: {}, sharedLabels, value: series.sum, metricName: `${this.name}_sum` },
          { labels: {}, sharedLabels, value: series.count, metricName: `${this.name}_count` },
        );
      }
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  /** As prom-client's Histogram#get: the labels of each value in one object. */
  async get(): Promise<{
    name: string;
    help: string;
    type: string;
    values: MetricValue[];
    aggregator: string;
  }> {
    const data = this.getForPromString();
    data.values = data.values.map(({ sharedLabels, labels, ...rest }) => ({
      ...rest,
      labels: { ...labels, ...sharedLabels },
    }));
    return data;
  }
}
