/**
 * The NOTIFY channels the schema's triggers send on (sql/schema), and typed
 * subscriptions to them. Nothing else names a channel: test/db/notifications.test.ts
 * checks that every channel here is sent by the schema and every channel the schema
 * sends is here.
 *
 * A subscription's `onListen` runs on every (re)connection of the listening session:
 * notifications sent while it was away are lost, so a subscriber catches up there.
 */
import type { Sql } from './client.ts';

export const CHANNELS = {
  /** A run became queued; payload: its id. */
  runQueued: 'run_queued',
  /** A running run was cancelled or deleted (its executor kills it); payload: its id. */
  runCancelled: 'run_cancelled',
  /** A user's tokens, role or state changed; payload: the user's id. */
  authChanged: 'auth_changed',
  /** A schedule's next occurrence changed; payload: next_run_at in epoch milliseconds. */
  scheduleChanged: 'schedule_changed',
} as const;

export type Channel = (typeof CHANNELS)[keyof typeof CHANNELS];

export interface Subscription {
  unlisten(): Promise<void>;
}

export class Notifications {
  private readonly sql: Sql;

  constructor(sql: Sql) {
    this.sql = sql;
  }

  /** Some run was queued. */
  onRunQueued(handler: () => void, onListen?: () => void): Promise<Subscription> {
    return this.listen(CHANNELS.runQueued, () => handler(), onListen);
  }

  /** Run `runId` was cancelled (or deleted) while running. */
  onRunCancelled(handler: (runId: number) => void, onListen?: () => void): Promise<Subscription> {
    return this.listenForId(CHANNELS.runCancelled, handler, onListen);
  }

  /** User `userId`'s sessions, role or state changed. */
  onAuthChanged(handler: (userId: number) => void, onListen?: () => void): Promise<Subscription> {
    return this.listenForId(CHANNELS.authChanged, handler, onListen);
  }

  /** A schedule's next occurrence is now at `nextRunAtMs` (epoch ms). */
  onScheduleChanged(handler: (nextRunAtMs: number) => void, onListen?: () => void): Promise<Subscription> {
    return this.listenForId(CHANNELS.scheduleChanged, handler, onListen);
  }

  /** A payload that is not a safe integer (never sent by the schema) is ignored. */
  private listenForId(
    channel: Channel,
    handler: (value: number) => void,
    onListen?: () => void,
  ): Promise<Subscription> {
    return this.listen(
      channel,
      (payload) => {
        const value = Number(payload);
        if (payload !== '' && Number.isSafeInteger(value)) handler(value);
      },
      onListen,
    );
  }

  private async listen(
    channel: Channel,
    handler: (payload: string) => void,
    onListen?: () => void,
  ): Promise<Subscription> {
    const { unlisten } = await this.sql.listen(channel, handler, onListen);
    return { unlisten };
  }
}
