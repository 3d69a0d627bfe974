/**
 * What a scrape of `/metrics` answers, wherever it is served (the API port behind
 * METRICS_TOKEN, or the metrics listener on METRICS_PORT): the registry's text after
 * sampling the run queue (and, for an API process, the pool) at scrape time; and who
 * may see it.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { Metrics } from '../metrics.ts';
import type { Repositories } from '../repositories/index.ts';

export async function scrape(
  metrics: Metrics,
  repos: Repositories,
  log: FastifyBaseLogger,
  options: { pool: boolean },
): Promise<string> {
  try {
    const [status, depth] = await Promise.all([
      options.pool ? repos.system.status() : null,
      repos.runs.queueDepth(),
    ]);
    if (status !== null) {
      metrics.poolConnections.set({ state: 'total' }, status.connections);
      metrics.poolConnections.set({ state: 'idle' }, status.idle_connections);
    }
    metrics.setQueueDepth(depth);
    metrics.sampleSuccess.set(1);
    metrics.sampleTimestamp.set(Date.now() / 1000);
  } catch (err) {
    // Metrics must answer while the database is down: that is when they matter. The
    // gauges keep their last sample, and say it is one.
    metrics.sampleSuccess.set(0);
    log.warn({ err }, 'could not sample the pool and queue for metrics');
  }
  return metrics.registry.metrics();
}

/**
 * Whether the Authorization header is `Bearer <METRICS_TOKEN>`. Compared as SHA-256
 * digests in constant time, so neither the length nor a prefix of the token leaks.
 */
export function presentsToken(authorization: string | undefined, token: string | undefined): boolean {
  if (token === undefined || authorization === undefined) return false;
  const match = /^Bearer[ ]+(\S+)\s*$/i.exec(authorization);
  if (match === null) return false;
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(match[1]!), digest(token));
}
