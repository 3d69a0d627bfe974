/**
 * The statistics counters (sql/schema/30-statistics.sql) against a full recount:
 * under concurrent inserts (single and multi-row), status changes, metric changes,
 * deletes, moves between users, user changes and user deletion (cascade), every
 * snapshot of the counters equals a recount of the rows in the same snapshot, and the
 * repository's answers equal the scanning queries they replaced.
 */
import { randomBytes } from 'node:crypto';
import type postgres from 'postgres';
import t from 'tap';
import { testDatabase } from '../helpers/db.ts';
import { makeScript, makeUser, startRun } from '../helpers/fixtures.ts';

type Sql = postgres.Sql | postgres.TransactionSql;

/** The counters, summed over stripes, zeros left out: one comparable value. */
async function counted(sql: Sql) {
  const [row] = await sql`
    select
      (select coalesce(jsonb_agg(x order by x.status), '[]') from (
        select status::text, sum(scripts)::int8 as n, sum(size_bytes)::int8 as size,
          sum(timed)::int8 as timed, sum(time_sum)::text as t
        from script_counters group by status
        having sum(scripts) <> 0 or sum(size_bytes) <> 0 or sum(timed) <> 0 or sum(time_sum) <> 0
      ) as x) as by_status,
      (select coalesce(jsonb_agg(x order by x.hour), '[]') from (
        select hour, sum(scripts)::int8 as n from script_upload_counts group by hour having sum(scripts) <> 0
      ) as x) as upload_hours,
      (select coalesce(jsonb_agg(x order by x.user_id), '[]') from (
        select user_id, script_count as n from user_script_counts where script_count <> 0
      ) as x) as per_user,
      (select coalesce(jsonb_agg(x order by x.p), '[]') from (
        select auth_provider::text as p, sum(users)::int8 as n, sum(active)::int8 as active,
          sum(verified)::int8 as verified, sum(ibkr_connected)::int8 as ibkr,
          sum(created_epoch_sum)::text as epoch
        from user_counters group by auth_provider
        having sum(users) <> 0 or sum(active) <> 0 or sum(verified) <> 0 or sum(ibkr_connected) <> 0
          or sum(created_epoch_sum) <> 0
      ) as x) as by_provider,
      (select coalesce(jsonb_agg(x order by x.hour), '[]') from (
        select hour, sum(users)::int8 as n from user_registration_counts group by hour having sum(users) <> 0
      ) as x) as registration_hours
  `;
  return row;
}

/** The same values from the rows themselves. */
async function recounted(sql: Sql) {
  const [row] = await sql`
    select
      (select coalesce(jsonb_agg(x order by x.status), '[]') from (
        select status::text, count(*)::int8 as n, sum(file_size)::int8 as size,
          count(execution_time_seconds)::int8 as timed, coalesce(sum(execution_time_seconds), 0)::text as t
        from scripts group by status
      ) as x) as by_status,
      (select coalesce(jsonb_agg(x order by x.hour), '[]') from (
        select date_trunc('hour', created_at, 'UTC') as hour, count(*)::int8 as n from scripts group by 1
      ) as x) as upload_hours,
      (select coalesce(jsonb_agg(x order by x.user_id), '[]') from (
        select user_id, count(*)::int8 as n from scripts group by user_id
      ) as x) as per_user,
      (select coalesce(jsonb_agg(x order by x.p), '[]') from (
        select auth_provider::text as p, count(*)::int8 as n, count(*) filter (where is_active)::int8 as active,
          count(*) filter (where is_verified)::int8 as verified,
          count(*) filter (where is_ibkr_connected)::int8 as ibkr,
          sum(extract(epoch from created_at))::text as epoch
        from users group by auth_provider
      ) as x) as by_provider,
      (select coalesce(jsonb_agg(x order by x.hour), '[]') from (
        select date_trunc('hour', created_at, 'UTC') as hour, count(*)::int8 as n from users group by 1
      ) as x) as registration_hours
  `;
  return row;
}

/** Normalises numeric text ('3.500' vs '3.5') so equal sums compare equal. */
const norm = (v: unknown) =>
  JSON.parse(JSON.stringify(v), (k, x) =>
    (k === 't' || k === 'epoch') && typeof x === 'string' ? Number(x) : x,
  );

/** Deterministic PRNG so a failure can be replayed (the seed is printed). */
function prng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

t.test('counters equal a full recount under concurrent writes, in every snapshot', async (t) => {
  const { repos, sql } = await testDatabase(t, { poolMax: 12 });
  const seed = Number(process.env.STATS_SEED ?? Date.now() % 100000);
  t.comment(`seed ${seed} (STATS_SEED=${seed} replays it)`);
  const users: number[] = [];
  for (let i = 0; i < 12; i++) users.push((await makeUser(repos)).id);
  const pick = <T>(r: () => number, xs: T[]) => xs[Math.floor(r() * xs.length)]!;
  const pickScript = async (r: () => number) => {
    const rows = await sql<
      { id: number }[]
    >`select id from scripts order by id offset ${Math.floor(r() * 20)} limit 1`;
    return rows[0]?.id;
  };
  const errors = new Map<string, number>();

  async function op(r: () => number): Promise<void> {
    const x = r();
    if (x < 0.25) {
      await makeScript(repos, pick(r, users), { file_size: 1 + Math.floor(r() * 5000) });
    } else if (x < 0.3) {
      // A multi-row statement: one trigger call for many rows.
      await sql`
        insert into scripts (user_id, filename, original_filename, file_path, file_size, file_extension, sha256,
          created_at)
        select ${pick(r, users)}, ${randomBytes(8).toString('hex')} || g || '.js', 'bulk.js', '/x', g * 10, '.js',
          repeat('a', 64), now() - g * interval '3 hours'
        from generate_series(1, 5) as g
      `;
    } else if (x < 0.5) {
      const id = await pickScript(r);
      if (id === undefined) return;
      const run = await startRun(repos, id, 1000);
      const result = {
        exit_code: 0,
        execution_time_seconds: Math.round(r() * 10000) / 1000,
        memory_usage_mb: 1,
      };
      if (r() < 0.6) await repos.outcomes.complete(run.id, result);
      else if (r() < 0.5) await repos.outcomes.fail(run.id, 'boom', result);
      else await repos.runs.cancel(run.id);
    } else if (x < 0.6) {
      const id = await pickScript(r);
      if (id !== undefined) await sql`delete from scripts where id = ${id}`;
    } else if (x < 0.65) {
      const id = await pickScript(r);
      if (id === undefined) return;
      await sql`
        update scripts
        set file_size = file_size + 7, created_at = created_at - interval '2 days',
          execution_time_seconds = case when execution_time_seconds is null then null else 0.5 end
        where id = ${id}
      `;
    } else if (x < 0.7) {
      const id = await pickScript(r);
      if (id !== undefined) await sql`update scripts set user_id = ${pick(r, users)} where id = ${id}`;
    } else if (x < 0.75) {
      // A user deleted with its scripts, by the app (explicit delete, then the user) or by the cascade.
      const victim = pick(r, users);
      users.splice(users.indexOf(victim), 1);
      if (r() < 0.5) await repos.users.delete(victim);
      else await sql`delete from users where id = ${victim}`;
      users.push((await makeUser(repos)).id);
    } else if (x < 0.85) {
      const id = pick(r, users);
      await sql`
        update users
        set is_active = ${r() < 0.5}, is_verified = ${r() < 0.5},
          created_at = created_at - ${Math.floor(r() * 90)} * interval '1 day'
        where id = ${id}
      `;
    } else if (x < 0.9) {
      const id = pick(r, users);
      if (r() < 0.5)
        await sql`update users set ibkr_user_id = ${`U${id}`}, ibkr_connected_at = now() where id = ${id}`;
      else await sql`update users set ibkr_user_id = null, ibkr_connected_at = null where id = ${id}`;
    } else if (x < 0.95) {
      const id = pick(r, users);
      await sql`
        update users set auth_provider = 'google', google_id = ${`g${id}`}, hashed_password = null
        where id = ${id} and auth_provider = 'email'
      `;
    } else {
      // Several changes in one transaction, one of them rolled back by a savepoint.
      await sql.begin(async (tx) => {
        const u = pick(r, users);
        await tx`update scripts set file_size = file_size + 1 where user_id = ${u}`;
        await tx
          .savepoint(async (sp) => {
            await sp`delete from scripts where user_id = ${u}`;
            throw new Error('rolled back on purpose');
          })
          .catch(() => {});
      });
    }
  }

  let writing = true;
  const writers = Array.from({ length: 8 }, async (_, w) => {
    const r = prng(seed * 31 + w);
    for (let i = 0; i < 60; i++) {
      try {
        await op(r);
      } catch (error) {
        // Races are expected (a script deleted or moved between two steps, a user gone);
        // whatever failed was rolled back, so the counters must still agree.
        const key = (error as { code?: string; name?: string }).code ?? (error as Error).name;
        errors.set(key, (errors.get(key) ?? 0) + 1);
      }
    }
  });
  let snapshots = 0;
  let mismatches = 0;
  const reader = (async () => {
    while (writing) {
      await sql.begin('isolation level repeatable read read only', async (tx) => {
        const [a, b] = [await counted(tx), await recounted(tx)];
        snapshots++;
        if (JSON.stringify(norm(a)) !== JSON.stringify(norm(b))) {
          mismatches++;
          if (mismatches === 1) t.same(norm(a), norm(b), 'first mismatching snapshot');
        }
      });
    }
  })();
  await Promise.all(writers);
  writing = false;
  await reader;
  t.comment(`errors from races: ${JSON.stringify(Object.fromEntries(errors))}; ${snapshots} snapshots read`);
  t.ok(snapshots > 0, 'read snapshots while writers ran');
  t.equal(mismatches, 0, 'every snapshot of the counters equals the recount');
  t.same(norm(await counted(sql)), norm(await recounted(sql)), 'final counters equal the recount');
  const [scripts] = await sql<{ n: number }[]>`select count(*)::int as n from scripts`;
  t.ok(scripts!.n > 0, 'scripts remain to count');

  // The repository's answers equal the scanning queries they replaced.
  const [scan] = await sql`
    select count(*)::int8 as total, coalesce(round(sum(file_size) / 1048576.0, 2), 0) as mb,
      round(avg(execution_time_seconds), 3) as avg_time,
      count(*) filter (where created_at >= now() - interval '7 days')::int8 as recent
    from scripts
  `;
  const stats = await repos.stats.scriptStats();
  t.equal(stats.total_scripts, scan!.total);
  t.equal(stats.total_size_mb, scan!.mb);
  t.equal(stats.avg_execution_time, scan!.avg_time);
  t.equal(stats.uploads_last_7_days, scan!.recent);
  const [perf] = await sql`
    select round(avg(execution_time_seconds), 3) as avg_time, max(execution_time_seconds) as max_time,
      min(execution_time_seconds) as min_time, count(*)::int8 as total_scripts
    from scripts where status = 'completed'
  `;
  t.same(await repos.stats.performance(), perf);
  const top = await sql`
    select user_id, count(*)::int8 as script_count from scripts
    group by user_id order by script_count desc, user_id limit 5
  `;
  t.same(
    (await repos.stats.topUsers(5)).map((u) => ({ user_id: u.user_id, script_count: u.script_count })),
    top.map((u) => ({ ...u })),
    'top users equal a recount, deleted users gone',
  );
  const [u] = await sql`
    select count(*)::int8 as total, count(*) filter (where is_active)::int8 as active,
      count(*) filter (where created_at >= now() - interval '30 days')::int8 as recent
    from users
  `;
  const us = await repos.stats.userStats();
  t.same([us.total, us.active, us.registrations_last_30_days], [u!.total, u!.active, u!.recent]);
  const byProvider = await sql`
    select e.p as auth_provider, count(u.id)::int8 as user_count,
      to_timestamp(avg(extract(epoch from u.created_at))) as avg_created_at
    from unnest(enum_range(null::auth_provider)) with ordinality as e(p, n)
    left join users as u on u.auth_provider = e.p
    group by e.p, e.n order by e.n
  `;
  const ours = await repos.stats.usersByProvider();
  t.same(
    ours.map((r) => r.user_count),
    byProvider.map((r) => r.user_count),
  );
  for (const [i, row] of ours.entries()) {
    const expected = byProvider[i]!.avg_created_at as Date | null;
    t.ok(
      expected === null
        ? row.avg_created_at === null
        : Math.abs(row.avg_created_at!.getTime() - expected.getTime()) <= 1,
      `mean registration time of ${row.auth_provider}`,
    );
  }
});

t.test('the 7-day and 30-day windows count to the second, across hour buckets', async (t) => {
  const { repos, sql } = await testDatabase(t);
  const user = await makeUser(repos);
  const ids: number[] = [];
  for (let i = 0; i < 6; i++) ids.push((await makeScript(repos, user.id)).id);
  // Just inside, just outside, and deep inside the window; the first two share the boundary hour.
  await sql`update scripts set created_at = now() - interval '7 days' + interval '1 second' where id = ${ids[0]!}`;
  await sql`update scripts set created_at = now() - interval '7 days' - interval '1 second' where id = ${ids[1]!}`;
  await sql`update scripts set created_at = now() - interval '6 days' where id = ${ids[2]!}`;
  await sql`update scripts set created_at = now() - interval '8 days' where id = ${ids[3]!}`;
  t.equal((await repos.stats.scriptStats()).uploads_last_7_days, 4);
  const old = await makeUser(repos);
  await sql`update users set created_at = now() - interval '30 days' - interval '1 second' where id = ${old.id}`;
  await sql`update users set created_at = now() - interval '30 days' + interval '1 second' where id = ${user.id}`;
  t.equal((await repos.stats.userStats()).registrations_last_30_days, 1);
});

t.test('a user deleted drops out of the top users; TRUNCATE resets the counters', async (t) => {
  const { repos, sql } = await testDatabase(t);
  const a = await makeUser(repos, { username: 'aaa' });
  const b = await makeUser(repos, { username: 'bbb' });
  for (let i = 0; i < 3; i++) await makeScript(repos, a.id);
  await makeScript(repos, b.id);
  t.same(
    (await repos.stats.topUsers(10)).map((u) => u.username),
    ['aaa', 'bbb'],
  );
  await sql`delete from users where id = ${a.id}`;
  t.same(await repos.stats.topUsers(10), [{ user_id: b.id, username: 'bbb', script_count: 1 }]);
  t.equal((await repos.stats.scriptStats()).total_scripts, 1);
  await sql`truncate scripts cascade`;
  t.equal((await repos.stats.scriptStats()).total_scripts, 0);
  t.same(await repos.stats.topUsers(10), []);
  await sql`truncate users cascade`;
  t.equal((await repos.stats.userStats()).total, 0);
  t.same(norm(await counted(sql)), norm(await recounted(sql)));
});

t.test('the migration backfills counters from rows that existed before it', async (t) => {
  const { repos, sql } = await testDatabase(t);
  const user = await makeUser(repos);
  for (let i = 0; i < 3; i++) await makeScript(repos, user.id, { file_size: 10 * (i + 1) });
  // Wipe the counters behind the triggers' back, then run the migration's backfill part again.
  await sql`delete from script_counters`;
  await sql`delete from script_upload_counts`;
  await sql`delete from user_script_counts`;
  await sql`delete from user_counters`;
  await sql`delete from user_registration_counts`;
  const { readFile, readdir } = await import('node:fs/promises');
  const dir = new URL('../../migrations/', import.meta.url);
  const file = (await readdir(dir)).find((f) => f.endsWith('_constant-time-statistics.sql'))!;
  const text = await readFile(new URL(file, dir), 'utf8');
  const backfill = text.slice(text.indexOf('-- Backfill'), text.indexOf('-- Down Migration'));
  await sql.unsafe(backfill);
  t.same(norm(await counted(sql)), norm(await recounted(sql)));
  t.equal((await repos.stats.scriptStats()).total_scripts, 3);
});
