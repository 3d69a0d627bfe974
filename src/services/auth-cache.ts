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
 */
import type { UserRole } from '../domain/enums.js';

export interface AuthIdentity {
  user_id: number;
  role: UserRole;
}

interface Entry {
  identity: AuthIdentity;
  key: string;
  until: number;
}

export class AuthCache {
  private readonly entries = new Map<string, Entry>();
  private readonly byUser = new Map<number, Set<string>>();

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

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

  set(key: string, identity: AuthIdentity, expiresAt: Date): void {
    if (!this.enabled) return;
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
  }

  evictUser(userId: number): void {
    const keys = this.byUser.get(userId);
    if (keys === undefined) return;
    for (const key of keys) this.entries.delete(key);
    this.byUser.delete(userId);
  }

  evictKey(key: string): void {
    const entry = this.entries.get(key);
    if (entry) this.remove(entry);
  }

  clear(): void {
    this.entries.clear();
    this.byUser.clear();
  }

  get size(): number {
    return this.entries.size;
  }

  private remove(entry: Entry): void {
    this.entries.delete(entry.key);
    const keys = this.byUser.get(entry.identity.user_id);
    keys?.delete(entry.key);
    if (keys?.size === 0) this.byUser.delete(entry.identity.user_id);
  }
}
