/**
 * The open log streams (`GET /scripts/{id}/logs?follow=true`) of one app: how many
 * there may be, and ending them all when the app closes.
 *
 * A follower holds a socket and polls the database every FOLLOW_POLL_MS, so they are
 * limited per user and in total. And a stream is a hijacked response that Fastify
 * knows nothing of: `server.close()` would wait for it forever (close-with-grace then
 * kills the process with exit 1), so the app's `preClose` ends every stream first.
 */

/** How many log streams may be open at once. */
export interface FollowLimits {
  perUser: number;
  total: number;
}

/**
 * Open streams per user: every run of a user (at most MAX_CONCURRENT_SCRIPTS) watched
 * from two places.
 */
export const FOLLOWERS_PER_RUN = 2;
/**
 * Open streams per pool connection: each polls with one short indexed query per
 * FOLLOW_POLL_MS (500 ms), so 20 of them cost a connection about 40 queries a second.
 */
export const FOLLOWERS_PER_CONNECTION = 20;

/** The default limits, from the pool size and the per-user run limit. */
export function followLimits(config: { DB_POOL_MAX: number; MAX_CONCURRENT_SCRIPTS: number }): FollowLimits {
  return {
    perUser: config.MAX_CONCURRENT_SCRIPTS * FOLLOWERS_PER_RUN,
    total: config.DB_POOL_MAX * FOLLOWERS_PER_CONNECTION,
  };
}

interface Follower {
  userId: number;
  /** Ends the stream at once (a last event, then the end of the response). */
  shutdown: () => void;
}

export class Followers {
  private readonly open = new Set<Follower>();
  private readonly byUser = new Map<number, number>();
  private closing = false;

  readonly limits: FollowLimits;

  constructor(limits: FollowLimits) {
    this.limits = limits;
  }

  /**
   * Registers a stream of `userId`, or answers which limit stands in the way. The check
   * and the registration are one synchronous step, so concurrent requests cannot both
   * take the last place. `release` must be called when the stream ends.
   */
  admit(
    userId: number,
    shutdown: () => void,
  ): { release: () => void } | { refused: 'user' | 'total' | 'closing' } {
    if (this.closing) return { refused: 'closing' };
    const mine = this.byUser.get(userId) ?? 0;
    if (mine >= this.limits.perUser) return { refused: 'user' };
    if (this.open.size >= this.limits.total) return { refused: 'total' };
    const follower: Follower = { userId, shutdown };
    this.open.add(follower);
    this.byUser.set(userId, mine + 1);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.open.delete(follower);
        const left = (this.byUser.get(userId) ?? 1) - 1;
        if (left === 0) this.byUser.delete(userId);
        else this.byUser.set(userId, left);
      },
    };
  }

  /** Streams open now. */
  get size(): number {
    return this.open.size;
  }

  /** Ends every open stream and refuses new ones: the app is closing. */
  shutdownAll(): void {
    this.closing = true;
    for (const follower of [...this.open]) follower.shutdown();
  }
}
