/**
 * Rate-limit counters shared by every API process (`rate_limits`, UNLOGGED): one
 * statement per hit, an upsert that starts a new fixed window when the last one has
 * ended, else counts the hit, and returns the count and the time left.
 */
import type { Database } from '../db/database.ts';

export class RateLimitRepository {
  private readonly db: Database;

  constructor(db: Database) {
    this.db = db;
  }

  /** Counts a hit on `key` in a window of `windowMs`; the hits so far and the ms left. */
  async hit(key: string, windowMs: number): Promise<{ current: number; ttl: number }> {
    const row = await this.db.one<{ hits: number; ttl: number }>(
      'rateLimits.hit',
      this.db.sql`
        insert into rate_limits as r (key, hits, expires_at)
        values (${key.slice(0, 512)}, 1, now() + make_interval(secs => ${windowMs / 1000}))
        on conflict (key) do update set
          hits = case when r.expires_at <= now() then 1 else r.hits + 1 end,
          expires_at = case when r.expires_at <= now() then excluded.expires_at else r.expires_at end
        returning hits, ceil(extract(epoch from expires_at - now()) * 1000)::bigint as ttl
      `,
    );
    return { current: row.hits, ttl: Math.max(0, row.ttl) };
  }

  /** Deletes counters whose window has ended (maintenance). */
  prune(): Promise<number> {
    return this.db.count('rateLimits.prune', this.db.sql`delete from rate_limits where expires_at < now()`);
  }
}
