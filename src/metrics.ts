/**
 * Prometheus metrics of one process, on a registry of its own (not prom-client's
 * global one), so several apps in one test process do not collide.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

export class Metrics {
  readonly registry = new Registry();

  /** Every request's duration, by method, route pattern and status code (src/http/plugins/metrics.ts). */
  readonly httpDuration = new LabelledHistogram(
    'http_request_duration_seconds',
    'HTTP requests by method, route pattern and status code',
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    this.registry,
  );

  /** Every query's duration, by repository method and outcome (src/db/database.ts). */
  readonly queryDuration = new LabelledHistogram(
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

  readonly sampleSuccess = new Gauge({
    name: 'db_sample_success',
    help: '1 when this scrape sampled the queue (and pool) from the database; 0 when it could not, and those gauges hold the sample of db_sample_timestamp_seconds',
    registers: [this.registry],
  });

  readonly sampleTimestamp = new Gauge({
    name: 'db_sample_timestamp_seconds',
    help: 'When the queue and pool gauges were last sampled from the database (Unix time)',
    registers: [this.registry],
  });

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /** A query observer for Database (see src/db/database.ts). */
  readonly observeQuery = (name: string, seconds: number, ok: boolean): void => {
    const histogram = this.queryDuration;
    const key = ok ? name : `${name}\u0000error`;
    histogram.observe(
      histogram.at(key) ?? histogram.add(key, { query: name, outcome: ok ? 'ok' : 'error' }),
      seconds,
    );
  };

  /** The run queue as sampled at scrape time (the API's and the worker's /metrics). */
  setQueueDepth(depth: { queued: number; running: number }): void {
    this.queueDepth.set({ status: 'queued' }, depth.queued);
    this.queueDepth.set({ status: 'running' }, depth.running);
  }

  /** Observes an HTTP request (see src/http/plugins/metrics.ts). */
  observeRequest(method: string, route: string, statusCode: number, seconds: number): void {
    const histogram = this.httpDuration;
    const key = `${method} ${statusCode} ${route}`;
    histogram.observe(
      histogram.at(key) ?? histogram.add(key, { method, route, status_code: String(statusCode) }),
      seconds,
    );
  }
}

/** One label set: bucket counts (not cumulative; the last one is +Inf), sum and count. */
export interface Series {
  readonly labels: Readonly<Record<string, string>>;
  readonly buckets: Float64Array;
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
 * A histogram for the hot paths (every query, every request), registered in a prom-client
 * registry and exported in exactly the format of prom-client's Histogram. The caller names
 * a label set by a string key it already has or builds cheaply; observing is a Map lookup
 * by that key, a short loop over the bounds and three additions
 * (`h.observe(h.at(key) ?? h.add(key, labels), seconds)`). prom-client's `observe`
 * validates the labels and hashes them into a string on every call, even through a child.
 */
export class LabelledHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly series = new Map<string, Series>();

  readonly name: string;
  readonly help: string;
  private readonly bounds: readonly number[];

  constructor(name: string, help: string, bounds: readonly number[], registry: Registry) {
    this.name = name;
    this.help = help;
    this.bounds = bounds;
    registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0]);
  }

  /** The series of `key`, if it was added. */
  at(key: string): Series | undefined {
    return this.series.get(key);
  }

  /** A new series for `key` with these labels (bounded: route patterns, query names, statuses). */
  add(key: string, labels: Record<string, string>): Series {
    const series: Series = { labels, buckets: new Float64Array(this.bounds.length + 1), sum: 0, count: 0 };
    this.series.set(key, series);
    return series;
  }

  observe(series: Series, seconds: number): void {
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
    for (const series of this.series.values()) {
      const sharedLabels = series.labels;
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
