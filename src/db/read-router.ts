/**
 * Where read-mostly queries go when there is a read replica (DATABASE_READ_URL).
 *
 * Repositories' listing, history, search and statistics methods query `db.reader`; the
 * primary's Database answers that with the replica's Database when the replica is
 *   - up and at most REPLICA_MAX_LAG_SECONDS behind (a probe, every PROBE_MS, compares
 *     the replica's `pg_last_wal_replay_lsn()` with `pg_current_wal_lsn()` samples of
 *     the primary: the lag is how long ago the primary was last known to be at a position
 *     the replica has replayed — no clocks compared, an idle primary is no lag), and
 *   - not behind the caller's own recent write (read-your-writes): a request that writes
 *     pins its user to the primary at `pg_current_wal_lsn()` taken after the write
 *     committed, until the replica has replayed past that position, for at most
 *     REPLICA_MAX_LAG_SECONDS + 2 probes (after that, a replica that is used lags less
 *     than the pin's age, so it has the write).
 * Otherwise the primary's Database itself. A query the replica fails to answer
 * (connection refused or lost, timeout, conflict with recovery) is run again on the
 * primary and the replica counts as down until the next probe that reaches it: a
 * replica that is down is bypassed, never an error.
 *
 * The caller is known from a request scope (`withScope` of read-scope.ts, entered per HTTP
 * request; the read-scope plugin names the authenticated user). A pin is told to every API process
 * with a NOTIFY (PIN_CHANNEL) by the statement that takes the write's position: in the
 * process that took the write it holds before the answer; in the others from the moment
 * the NOTIFY arrives (milliseconds; see docs/scaling.md).
 */
import type { Logger } from 'pino';
import type { Sql } from './client.ts';
import { Database } from './database.ts';
import { parseLsn } from './lsn.ts';
import { currentScope, type ReadScope, withScope } from './read-scope.ts';

/** How often the replica's position is checked. */
export const PROBE_MS = 1000;
/** Primary positions kept to measure the lag (one per probe). */
const MAX_SAMPLES = 3600;
const MAX_LSN = (1n << 64n) - 1n;
/** Where a write's pin is told to every API process: `<user id> <lsn>`. */
export const PIN_CHANNEL = 'read_your_writes';

export type ReplicaState = 'ok' | 'lagging' | 'down' | 'unknown';

export interface ReplicaStatus {
  state: ReplicaState;
  /** Seconds the replica is behind the primary; null while it is down or unknown. */
  lag_seconds: number | null;
  max_lag_seconds: number;
}

interface Sample {
  lsn: bigint;
  at: number;
}

interface Pin {
  lsn: bigint;
  until: number;
}

export interface ReadRouterOptions {
  primary: Database;
  replica: Database;
  maxLagSeconds: number;
  log: Logger;
  /** Milliseconds clock; tests never need another, it is here for clarity. */
  now?: () => number;
}

export class ReadRouter {
  readonly maxLagSeconds: number;
  private readonly primary: Database;
  private readonly replica: Database;
  /** The replica without the fallback to the primary: a probe must reach the replica or fail. */
  private readonly replicaProbe: Database;
  private readonly log: Logger;
  private readonly now: () => number;
  private state: ReplicaState = 'unknown';
  private lagSeconds: number | null = null;
  private replayLsn = -1n;
  private samples: Sample[] = [];
  private readonly pins = new Map<number, Pin>();
  private timer: NodeJS.Timeout | undefined;
  private probing: Promise<ReplicaStatus> | undefined;
  private listening: Promise<(() => Promise<void>) | undefined> | undefined;

  constructor(options: ReadRouterOptions) {
    this.primary = options.primary;
    this.replica = options.replica;
    this.replicaProbe = new Database(options.replica.sql, {
      ...options.replica.options,
      fallback: undefined,
    });
    this.maxLagSeconds = options.maxLagSeconds;
    this.log = options.log;
    this.now = options.now ?? Date.now;
  }

  /** Starts the periodic probe (the first one now). */
  start(): void {
    if (this.timer !== undefined) return;
    void this.probe();
    this.timer = setInterval(() => void this.probe(), PROBE_MS);
    this.timer.unref();
    // The pins of writes taken by the other API processes (see `wrote`).
    const sql = this.primary.sql as Sql;
    this.listening = sql
      .listen(PIN_CHANNEL, (payload) => this.pinFromNotice(payload))
      .then(
        ({ unlisten }) => unlisten,
        (error: unknown) => {
          this.log.warn({ err: error }, 'read-your-writes: cannot hear the other processes’ writes');
          return undefined;
        },
      );
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    const unlisten = await this.listening;
    this.listening = undefined;
    await unlisten?.().catch(() => {});
  }

  /** The Database a read of the current caller goes to (see the module comment). */
  reader(): Database {
    if (this.state !== 'ok') return this.primary;
    const scope = currentScope();
    if (scope === undefined) return this.replica;
    if (scope.writes) return this.primary;
    if (scope.userId !== null) {
      const pin = this.pins.get(scope.userId);
      if (pin !== undefined) {
        if (this.replayLsn >= pin.lsn || this.now() >= pin.until) this.pins.delete(scope.userId);
        else return this.primary;
      }
    }
    return this.replica;
  }

  /** Runs `fn` (the rest of a request) in `scope`: its reads are routed by it. */
  withScope<T>(scope: ReadScope, fn: () => T): T {
    return withScope(scope, fn);
  }

  /**
   * After a request that may have written has done its work (before it is answered):
   * pins its user to the primary until the replica has replayed the primary's current
   * position, here and (by NOTIFY) in every other API process. One round trip on the
   * primary; none without a user.
   */
  async wrote(scope: ReadScope): Promise<void> {
    if (scope.userId === null || !scope.writes) return;
    let lsn = MAX_LSN; // unknown: the primary until the pin ends
    try {
      const sql = this.primary.sql;
      // The same statement tells every API process (PIN_CHANNEL, at its commit), so the
      // user's next read through another process is pinned too, once the NOTIFY is there.
      const row = await this.primary.one<{ lsn: string }>(
        'replica.writePosition',
        sql`
          select p.lsn
          from (select pg_current_wal_lsn()::text as lsn) as p
          cross join lateral (select pg_notify(${PIN_CHANNEL}::text, ${String(scope.userId)}::text || ' ' || p.lsn)) as sent
        `,
      );
      lsn = parseLsn(row.lsn);
    } catch (error) {
      this.log.warn({ err: error }, 'read-your-writes: no write position; the user reads from the primary');
    }
    this.pin(scope.userId, lsn);
  }

  /** `<user id> <lsn>` from PIN_CHANNEL. */
  private pinFromNotice(payload: string): void {
    const [user, lsn] = payload.split(' ');
    const userId = Number(user);
    if (!Number.isSafeInteger(userId) || lsn === undefined) return;
    try {
      this.pin(userId, parseLsn(lsn));
    } catch {
      // not ours
    }
  }

  private pin(userId: number, lsn: bigint): void {
    const previous = this.pins.get(userId);
    this.pins.set(userId, {
      lsn: previous !== undefined && previous.lsn > lsn ? previous.lsn : lsn,
      until: this.now() + this.maxLagSeconds * 1000 + 2 * PROBE_MS,
    });
  }

  /** A query on the replica failed for want of the replica: bypass it until a probe reaches it. */
  replicaFailed(error: unknown): void {
    if (this.state !== 'down') this.log.warn({ err: error }, 'read replica failed: reading from the primary');
    this.state = 'down';
    this.lagSeconds = null;
  }

  /** The last probe's finding. */
  status(): ReplicaStatus {
    return { state: this.state, lag_seconds: this.lagSeconds, max_lag_seconds: this.maxLagSeconds };
  }

  /** Checks the replica now (concurrent callers share one check). */
  probe(): Promise<ReplicaStatus> {
    this.probing ??= this.check().finally(() => {
      this.probing = undefined;
    });
    return this.probing;
  }

  private async check(): Promise<ReplicaStatus> {
    const now = this.now();
    try {
      const psql = this.primary.sql;
      const primary = await this.primary.one<{ lsn: string }>(
        'replica.primaryPosition',
        psql`select pg_current_wal_lsn()::text as lsn`,
      );
      this.samples.push({ lsn: parseLsn(primary.lsn), at: now });
    } catch (error) {
      // The primary is the one in trouble: readiness says so; nothing to route around.
      this.log.debug({ err: error }, 'replica probe: the primary did not answer');
      return this.status();
    }
    let replay: bigint;
    try {
      const rsql = this.replicaProbe.sql;
      const row = await this.replicaProbe.one<{ lsn: string | null }>(
        'replica.replayPosition',
        rsql`select pg_last_wal_replay_lsn()::text as lsn`,
      );
      if (row.lsn === null)
        throw new Error('DATABASE_READ_URL is not a replica (pg_last_wal_replay_lsn() is null)');
      replay = parseLsn(row.lsn);
    } catch (error) {
      if (this.state !== 'down')
        this.log.warn({ err: error }, 'read replica unreachable: reading from the primary');
      this.state = 'down';
      this.lagSeconds = null;
      this.trim(now);
      return this.status();
    }
    this.replayLsn = replay;
    // The latest time the primary was at a position the replica has replayed.
    let caughtUpAt: number | null = null;
    let behind = false;
    for (const sample of this.samples) {
      if (sample.lsn <= replay) caughtUpAt = sample.at;
      else behind = true;
    }
    const oldest = this.samples[0]?.at ?? now;
    const lag = !behind ? 0 : (now - (caughtUpAt ?? oldest)) / 1000;
    const lagging = lag > this.maxLagSeconds;
    if (lagging && this.state !== 'lagging')
      this.log.warn({ lag_seconds: lag }, 'read replica lags: reading from the primary');
    else if (!lagging && this.state !== 'ok') this.log.info({ lag_seconds: lag }, 'read replica in use');
    this.state = lagging ? 'lagging' : 'ok';
    this.lagSeconds = Math.round(lag * 1000) / 1000;
    this.trim(now, replay);
    return this.status();
  }

  /**
   * Keeps the samples a later lag needs: the latest one the replica has replayed and the
   * newer ones (when the replica has replayed none, those of the last lag limit + 10 probes;
   * at most MAX_SAMPLES, thinned in the middle), and forgets pins that have ended.
   */
  private trim(now: number, replay?: bigint): void {
    let keepFrom = -1;
    if (replay !== undefined) {
      for (let i = 0; i < this.samples.length; i++) if (this.samples[i]!.lsn <= replay) keepFrom = i;
    }
    if (keepFrom < 0) {
      const horizon = now - (this.maxLagSeconds * 1000 + 10 * PROBE_MS);
      keepFrom = Math.max(0, this.samples.findIndex((sample) => sample.at >= horizon) - 1);
    }
    if (keepFrom > 0) this.samples = this.samples.slice(keepFrom);
    if (this.samples.length > MAX_SAMPLES) this.samples.splice(1, 1);
    for (const [userId, pin] of this.pins) {
      if (now >= pin.until || (replay !== undefined && replay >= pin.lsn)) this.pins.delete(userId);
    }
  }
}
