/**
 * Keeps this process's AuthCache in step with the database: the `auth_changed`
 * notifications (sent by triggers at commit) evict a user's cached tokens. On
 * every (re)connection of the listening session the whole cache is dropped,
 * since notifications sent while it was away are lost.
 */
import type { Logger } from 'pino';
import type { Sql } from '../db/client.ts';
import { Notifications, type Subscription } from '../db/notifications.ts';
import type { AuthCache } from './auth-cache.ts';

export async function listenForAuthChanges(sql: Sql, cache: AuthCache, log: Logger): Promise<Subscription> {
  return new Notifications(sql).onAuthChanged(
    (userId) => cache.evictUser(userId),
    () => {
      cache.clear();
      log.debug('listening for auth changes');
    },
  );
}
