/**
 * Verified tokens, kept for a few seconds so that an authenticated request does
 * not spend a round trip on its token (DESIGN.md: auth must not add one).
 *
 * Safety: an entry lives at most `ttlMs` and never past the token's expiry; a
 * change to a user's tokens, role, password or active flag evicts that user's
 * entries here at once (this process) and in every other process through the
 * `auth_changed` notification that triggers send at commit (see
 * sql/schema/11-api-tokens.sql). If the notification connection drops, the
 * whole cache is cleared when it comes back, since notifications may have been lost.
 *
 * Eviction must also beat a lookup already under way: a token looked up just before a
 * logout, a deactivation or a password change commits can come back valid after the
 * eviction ran (or its NOTIFY arrived), and storing it then would serve a revoked
 * token for the whole TTL. So every eviction advances a generation — global for
 * `clear`, per user for `evictUser`, per key for `evictKey` — and a lookup takes
 * `generation()` before its query and hands it to `set`, which stores nothing when
 * anything that could concern the entry was evicted since.
 */
import type { UserRole } from '../domain/enums.ts';

export interface AuthIdentity {
  user_id: number;
  role: UserRole;
}

interface Entry {
  identity: AuthIdentity;
  key: string;
  until: number;
}

/** A point in the cache's eviction history, taken before a lookup (see `set`). */
export type CacheGeneration = number;

export class AuthCache {
  private readonly entries = new Map<string, Entry>();
  private readonly byUser = new Map<number, Set<string>>();
  /** Advanced by every eviction; `generation()` reads it. */
  private current: CacheGeneration = 0;
  /** The generation of the last `clear`, or of the newest eviction record dropped for room. */
  private floor: CacheGeneration = 0;
  /**
   * The generation of the last eviction of each user and key, oldest first (a record
   * is moved to the end when renewed). Bounded by maxEntries: a record dropped for
   * room raises `floor` to its generation, which can only refuse more, never less.
   */
  private readonly userEvicted = new Map<number, CacheGeneration>();
  private readonly keyEvicted = new Map<string, CacheGeneration>();

  private readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;

  constructor(ttlMs: number, maxEntries = 10_000, now: () => number = Date.now) {
    this.ttlMs = ttlMs;
    this.maxEntries = maxEntries;
    this.now = now;
  }

  get enabled(): boolean {
    return this.ttlMs > 0;
  }

  get(key: string): AuthIdentity | null {
    const entry = this.entries.get(key);
    if (entry === undefined) return null;
    if (entry.until <= this.now()) {
      this.remove(entry);
      return null;
    }
    return entry.identity;
  }

  /** The eviction generation now: take it before looking a token up, and pass it to `set`. */
  generation(): CacheGeneration {
    return this.current;
  }

  /**
   * Caches a verified token. With `since` (the `generation()` taken before the lookup),
   * nothing is stored when the cache was cleared, the user evicted or the key evicted
   * after it: the answer may predate a revocation. True when the entry was stored.
   */
  set(key: string, identity: AuthIdentity, expiresAt: Date, since?: CacheGeneration): boolean {
    if (!this.enabled) return false;
    if (since !== undefined && this.evictedSince(since, key, identity.user_id)) return false;
    const until = Math.min(this.now() + this.ttlMs, expiresAt.getTime());
    const old = this.entries.get(key);
    if (old) this.remove(old);
    if (this.entries.size >= this.maxEntries) {
      // Maps iterate in insertion order: the first entry is the oldest.
      const oldest = this.entries.values().next().value;
      if (oldest) this.remove(oldest);
    }
    const entry = { identity, key, until };
    this.entries.set(key, entry);
    const keys = this.byUser.get(identity.user_id);
    if (keys === undefined) this.byUser.set(identity.user_id, new Set([key]));
    else keys.add(key);
    return true;
  }

  evictUser(userId: number): void {
    this.record(this.userEvicted, userId);
    const keys = this.byUser.get(userId);
    if (keys === undefined) return;
    for (const key of keys) this.entries.delete(key);
    this.byUser.delete(userId);
  }

  evictKey(key: string): void {
    this.record(this.keyEvicted, key);
    const entry = this.entries.get(key);
    if (entry) this.remove(entry);
  }

  clear(): void {
    this.floor = ++this.current;
    this.userEvicted.clear();
    this.keyEvicted.clear();
    this.entries.clear();
    this.byUser.clear();
  }

  get size(): number {
    return this.entries.size;
  }

  private evictedSince(since: CacheGeneration, key: string, userId: number): boolean {
    return (
      this.floor > since ||
      (this.userEvicted.get(userId) ?? 0) > since ||
      (this.keyEvicted.get(key) ?? 0) > since
    );
  }

  private record<K>(records: Map<K, CacheGeneration>, id: K): void {
    if (!this.enabled) return;
    records.delete(id); // re-inserted last: the map stays ordered by generation
    records.set(id, ++this.current);
    if (records.size > this.maxEntries) {
      const [oldest, generation] = records.entries().next().value as [K, CacheGeneration];
      records.delete(oldest);
      this.floor = Math.max(this.floor, generation);
    }
  }

  private remove(entry: Entry): void {
    this.entries.delete(entry.key);
    const keys = this.byUser.get(entry.identity.user_id);
    keys?.delete(entry.key);
    if (keys?.size === 0) this.byUser.delete(entry.identity.user_id);
  }
}
