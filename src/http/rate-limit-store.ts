/**
 * A store for @fastify/rate-limit over shared counters (PostgreSQL's `rate_limits`,
 * rate-limit-repository.ts), so the limits hold across every API process: N processes
 * allow a limit once, not N times.
 */

/** Where the hits are counted: one call per hit. */
export interface RateLimitCounter {
  hit(key: string, windowMs: number): Promise<{ current: number; ttl: number }>;
}

type Callback = (error: Error | null, result?: { current: number; ttl: number }) => void;

interface RouteParams {
  routeInfo?: { method?: string | string[]; url?: string };
}

export interface RateLimitStore {
  incr(key: string, callback: Callback, timeWindow: number, max: number): void;
  child(params: object): RateLimitStore;
}

/** The store class @fastify/rate-limit instantiates (`store:` option), bound to `counter`. */
export function sharedRateLimitStore(counter: RateLimitCounter): new (params?: unknown) => RateLimitStore {
  return class PgRateLimitStore implements RateLimitStore {
    /** Counters of different routes never mix. */
    private readonly prefix: string;

    constructor(_params?: unknown, prefix = '') {
      this.prefix = prefix;
    }

    incr(key: string, callback: Callback, timeWindow: number): void {
      counter.hit(`${this.prefix}|${key}`, timeWindow).then(
        (result) => callback(null, result),
        (error: Error) => callback(error),
      );
    }

    /** Given the route's merged options (typed as route options, carrying `routeInfo`). */
    child(params: object): RateLimitStore {
      const route = (params as RouteParams).routeInfo;
      const method = [route?.method ?? ''].flat().join(',');
      return new PgRateLimitStore(undefined, `${method} ${route?.url ?? ''}`);
    }
  };
}
