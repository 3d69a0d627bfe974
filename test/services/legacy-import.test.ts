/**
 * import-legacy against a database built from the original's own DDL
 * (test/fixtures/legacy-schema.sql), in both enum-label spellings, with password
 * hashes made by real bcrypt implementations (bcryptjs, and @node-rs/bcrypt for the
 * SHA-256 pre-hash of a password past 72 bytes, which bcryptjs cannot take as bytes).
 * The old database is a second database on the same server, created here.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { hash as bcryptRs } from '@node-rs/bcrypt';
import bcryptjs from 'bcryptjs';
import postgres from 'postgres';
import t, { type Test } from 'tap';
import { ValidationError } from '../../src/domain/errors.ts';
import { formatReport, importLegacy } from '../../src/services/legacy-import/import.ts';
import { SecretBox } from '../../src/services/secret-box.ts';
import { ibkrContext } from '../../src/services/user-service.ts';
import { type TestApp, testApp } from '../helpers/app.ts';
import { rejectsWith } from '../helpers/assert.ts';
import { emptyDatabase } from '../helpers/db.ts';

const LOGIN = '/api/v1/auth/login';
const SECRETS = new SecretBox(randomBytes(32).toString('base64'));
const LONG_PASSWORD = `${'ü'.repeat(40)} and then some more`; // 80+ UTF-8 bytes
const NOW = new Date('2026-12-01T10:00:00Z');

type Labels = 'lower' | 'upper';

async function legacyDatabase(t: Test, labels: Labels) {
  const db = await emptyDatabase(t, `legacy_${labels}`);
  const sql = postgres(db.url, { max: 1, onnotice: () => {} });
  t.teardown(() => sql.end({ timeout: 5 }));
  const ddl = await readFile(new URL('../fixtures/legacy-schema.sql', import.meta.url), 'utf8');
  const spell = (xs: string[]) => xs.map((x) => `'${labels === 'upper' ? x.toUpperCase() : x}'`).join(', ');
  await sql.unsafe(
    ddl
      .replace(':provider_labels', spell(['email', 'google']))
      .replace(':status_labels', spell(['uploaded', 'running', 'completed', 'failed', 'cancelled'])),
  );
  return { ...db, sql };
}

const label = (labels: Labels, x: string | null) =>
  x === null ? null : labels === 'upper' ? x.toUpperCase() : x;

interface Seeded {
  ids: Record<string, number>;
  files: Record<number, Buffer>;
}

/** The old platform's rows: the cases LEGACY.md names, and a file for most scripts. */
async function seed(sql: postgres.Sql, labels: Labels, filesDir: string, base: number): Promise<Seeded> {
  const alice = bcryptjs.hashSync('old password 1', 4);
  const prehashed = createHash('sha256').update(Buffer.from(LONG_PASSWORD, 'utf8')).digest();
  const bob = await bcryptRs(prehashed, 4);
  const ids = {
    alice: base + 10,
    bob: base + 20,
    carol: base + 30,
    dup: base + 40,
    bad: base + 50,
    nohash: base + 60,
  };
  const user = (
    id: number,
    email: string,
    username: string,
    hash: string | null,
    provider: string | null,
    extra: Record<string, unknown> = {},
  ) => ({
    id,
    email,
    username,
    hashed_password: hash,
    auth_provider: label(labels, provider),
    google_id: null,
    is_active: null,
    is_verified: null,
    created_at: new Date('2024-01-01T00:00:00Z'),
    ...extra,
  });
  const users = [
    user(ids.alice, ' Alice@Example.COM ', 'alice smith', alice, 'email', {
      ibkr_user_id: 'U123',
      ibkr_access_token: 'plain-access',
      ibkr_refresh_token: 'plain-refresh',
      is_verified: true,
    }),
    user(ids.bob, 'bob@example.com', 'b.o', bob, null, { is_active: false }),
    user(ids.carol, 'carol@example.com', 'c', null, 'google', { google_id: 'g-carol', updated_at: null }),
    user(ids.dup, 'ALICE@example.com', 'alice2', alice, 'email'),
    user(ids.bad, 'not-an-email', 'bad', alice, 'email'),
    user(ids.nohash, 'nohash@example.com', 'no_hash', null, 'email'),
  ];
  for (const u of users)
    await sql`insert into users ${sql(u as Record<string, postgres.SerializableParameter>)}`;
  // Without time zone: UTC wall-clock values.
  await sql`
    update users set ibkr_connected_at = '2024-03-01 12:00:00', ibkr_token_expires_at = '2024-04-01 00:00:00'
    where id = ${ids.alice}
  `;

  const files: Record<number, Buffer> = {};
  const script = async (
    id: number,
    userId: number,
    status: string,
    opts: { ext?: string | null; file?: boolean; filename?: string; extra?: Record<string, unknown> } = {},
  ) => {
    const ext = opts.ext === undefined ? '.py' : opts.ext;
    const filename = opts.filename ?? `${randomUUID()}${ext ?? '.js'}`;
    const content = Buffer.from(`print("script ${id}")\n`);
    if (opts.file !== false) {
      await writeFile(path.join(filesDir, filename), content);
      files[id] = content;
    }
    const row = {
      id,
      user_id: userId,
      filename,
      original_filename: `strategy ${id}${ext ?? '.js'}`,
      file_path: `/srv/dollarclub/scripts/${filename}`,
      file_size: 999, // the original's number; the import measures the file
      file_extension: ext,
      status: label(labels, status),
      created_at: new Date('2024-02-01T00:00:00Z'),
      ...opts.extra,
    };
    await sql`insert into scripts ${sql(row as Record<string, postgres.SerializableParameter>)}`;
  };
  const s = (n: number) => base * 10 + n;
  await script(s(1), ids.alice, 'completed', {
    extra: {
      execution_logs: 'hello\n',
      execution_time_seconds: '1.250',
      exit_code: 0,
      started_at: new Date('2024-02-02T00:00:00Z'),
      completed_at: new Date('2024-02-02T00:00:01Z'),
    },
  });
  await script(s(2), ids.alice, 'running', { extra: { started_at: new Date('2024-02-03T00:00:00Z') } });
  await script(s(3), ids.bob, 'uploaded', { ext: null });
  await script(s(4), ids.bob, 'failed', {
    extra: { error_message: 'boom', updated_at: new Date('2024-02-05T00:00:00Z') },
  });
  await script(s(5), ids.carol, 'cancelled', { file: false });
  await script(s(6), ids.dup, 'uploaded');
  await script(s(7), ids.alice, 'uploaded', { filename: 'not-a-uuid.py' });
  return { ids: { ...ids, s1: s(1), s2: s(2), s3: s(3), s4: s(4), s5: s(5), s6: s(6), s7: s(7) }, files };
}

async function folders(t: Test) {
  const filesDir = await mkdtemp(path.join(tmpdir(), 'dollarclub-legacy-files-'));
  const reportDir = await mkdtemp(path.join(tmpdir(), 'dollarclub-legacy-report-'));
  t.teardown(() => Promise.all([rm(filesDir, { recursive: true }), rm(reportDir, { recursive: true })]));
  return { filesDir, reportDir };
}

function run(app: TestApp, legacyUrl: string, filesDir: string, detailsFile: string) {
  return importLegacy({
    legacyUrl,
    filesDir,
    sql: app.database.sql,
    secrets: SECRETS,
    detailsFile,
    now: NOW,
  });
}

/** Everything the import may write, as one comparable text. */
async function fingerprint(sql: postgres.Sql) {
  const [row] = await sql`
    select
      (select md5(coalesce(string_agg(u::text, '|' order by u.id), '')) from users as u) as users,
      (select md5(coalesce(string_agg(s::text, '|' order by s.id), '')) from scripts as s) as scripts,
      (select md5(coalesce(string_agg(c::text, '|' order by c.status, c.stripe), '')) from script_counters as c)
        as counters
  `;
  return row;
}

async function legacyFingerprint(sql: postgres.Sql) {
  const [row] = await sql`
    select (select md5(string_agg(u::text, '|' order by u.id)) from users as u) as users,
      (select md5(string_agg(s::text, '|' order by s.id)) from scripts as s) as scripts
  `;
  return row;
}

async function indexesAndKeys(sql: postgres.Sql) {
  return sql`
    select c.relname::text as name, pg_get_indexdef(i.indexrelid) as def
    from pg_index as i join pg_class as c on c.oid = i.indexrelid
    where i.indrelid in ('users'::regclass, 'scripts'::regclass, 'script_runs'::regclass, 'run_log_chunks'::regclass)
    union all
    select conname::text, pg_get_constraintdef(oid) || ' valid=' || convalidated
    from pg_constraint where conrelid in ('users'::regclass, 'scripts'::regclass, 'script_runs'::regclass, 'run_log_chunks'::regclass)
    order by 1, 2
  `;
}

t.test('an Alembic-built database (lower-case labels) into an empty one', async (t) => {
  const app = await testApp(t);
  const sql = app.database.sql;
  const legacy = await legacyDatabase(t, 'lower');
  const { filesDir, reportDir } = await folders(t);
  const { ids, files } = await seed(legacy.sql, 'lower', filesDir, 0);
  const schemaBefore = await indexesAndKeys(sql);
  const legacyBefore = await legacyFingerprint(legacy.sql);

  const report = await run(app, legacy.url, filesDir, path.join(reportDir, 'refused.csv'));
  t.equal(report.changed, true);
  t.equal(report.empty_target_fast_path, true, 'an empty target takes the fast path');
  t.same(report.users, { source: 6, imported: 3, already_present: 0, refused: 3 });
  t.same(report.scripts, { source: 7, imported: 4, already_present: 0, refused: 3, files_missing: 1 });
  t.equal(report.interrupted, 1);
  t.same(
    await indexesAndKeys(sql),
    schemaBefore,
    'every index and constraint is back, the foreign key validated',
  );
  t.same(await legacyFingerprint(legacy.sql), legacyBefore, 'the old database is unchanged');

  const details = await readFile(report.details_file, 'utf8');
  t.same(details.trim().split('\n'), [
    'kind,legacy_id,reason',
    `user,${ids.dup},email is the same as user ${ids.alice}'s after lower-casing (the older account is kept)`,
    `user,${ids.bad},email is not an email address`,
    `user,${ids.nohash},email user without a password hash`,
    `script,${ids.s5},file missing: ${(await legacy.sql`select filename from scripts where id = ${ids.s5!}`)[0]!.filename}`,
    `script,${ids.s6},its user ${ids.dup} is refused: email is the same as user ${ids.alice}'s after lower-casing (the older account is kept)`,
    `script,${ids.s7},filename is not <uuid><extension>`,
  ]);
  t.same(
    report.refused_by_reason.map((r) => [r.kind, r.count]),
    [
      ['user', 1],
      ['user', 1],
      ['user', 1],
      ['script', 1],
      ['script', 1],
      ['script', 1],
    ],
  );

  // Users: kept ids, normalised by the stated rules, tokens encrypted.
  const users = await sql`
    select id, email, username, auth_provider::text, is_active, is_verified, google_id, ibkr_user_id,
      ibkr_access_token, ibkr_refresh_token, ibkr_connected_at, ibkr_token_expires_at, hashed_password
    from users order by id
  `;
  t.same(
    users.map((u) => [u.id, u.email, u.username, u.auth_provider, u.is_active, u.is_verified]),
    [
      [ids.alice, 'alice@example.com', 'alice_smith', 'email', true, true],
      [ids.bob, 'bob@example.com', 'b_o', 'email', false, false],
      [ids.carol, 'carol@example.com', 'c__', 'google', true, false],
    ],
  );
  const alice = users[0]!;
  t.not(alice.ibkr_access_token, 'plain-access', 'no plaintext token is stored');
  t.equal(SECRETS.decrypt(alice.ibkr_access_token, ibkrContext(ids.alice!, 'access')), 'plain-access');
  t.equal(SECRETS.decrypt(alice.ibkr_refresh_token, ibkrContext(ids.alice!, 'refresh')), 'plain-refresh');
  t.same(
    alice.ibkr_connected_at,
    new Date('2024-03-01T12:00:00Z'),
    'a timestamp without time zone is read as UTC',
  );
  t.same(alice.ibkr_token_expires_at, new Date('2024-04-01T00:00:00Z'));
  t.match(alice.hashed_password, /^\$2[aby]\$04\$/, 'the bcrypt hash is kept until the first sign-in');

  // Scripts: kept ids, status and run summary, sha256 and size from the file, file in storage.
  const scripts = await sql`
    select id, user_id, status::text, file_extension, file_path, file_size, sha256, error_message,
      completed_at, execution_time_seconds,
      (select string_agg(data, '' order by seq) from run_log_chunks where run_id = scripts.last_run_id) as execution_logs
    from scripts order by id
  `;
  t.same(
    scripts.map((s) => [s.id, s.status, s.file_extension]),
    [
      [ids.s1, 'completed', '.py'],
      [ids.s2, 'failed', '.py'],
      [ids.s3, 'uploaded', '.js'],
      [ids.s4, 'failed', '.py'],
    ],
  );
  for (const s of scripts) {
    const content = files[s.id]!;
    t.equal(s.sha256, createHash('sha256').update(content).digest('hex'), `sha256 of script ${s.id}`);
    t.equal(s.file_size, content.length, 'the size is the file’s');
    const [stored] = await sql`select content from script_contents where script_id = ${s.id}`;
    t.same(stored?.content, content, 'the bytes are in script_contents');
  }
  t.equal(scripts[1]!.error_message, 'interrupted by the migration');
  t.same(scripts[1]!.completed_at, NOW);
  t.equal(scripts[0]!.execution_time_seconds, 1.25);
  t.equal(scripts[0]!.execution_logs, 'hello\n', 'the output is the run’s');
  t.same(
    scripts[3]!.completed_at,
    new Date('2024-02-05T00:00:00Z'),
    'a finished run without completed_at gets updated_at',
  );

  // Each script's last execution is one run of its history; the script names it.
  const runs = await sql`
    select r.script_id, r.status::text, r.error_message, r.exit_code, r.execution_time_seconds,
      r.log_bytes, s.last_run_id = r.id as linked, s.run_count,
      (select string_agg(c.data, '' order by c.seq) from run_log_chunks as c where c.run_id = r.id) as output
    from script_runs as r join scripts as s on s.id = r.script_id
    order by r.script_id
  `;
  t.same(
    runs.map((r) => ({ ...r })),
    [
      {
        script_id: ids.s1,
        status: 'completed',
        error_message: null,
        exit_code: 0,
        execution_time_seconds: 1.25,
        log_bytes: 6,
        linked: true,
        run_count: 1,
        output: 'hello\n',
      },
      {
        script_id: ids.s2,
        status: 'failed',
        error_message: 'interrupted by the migration',
        exit_code: null,
        execution_time_seconds: null,
        log_bytes: 0,
        linked: true,
        run_count: 1,
        output: null,
      },
      {
        script_id: ids.s4,
        status: 'failed',
        error_message: 'boom',
        exit_code: null,
        execution_time_seconds: null,
        log_bytes: 0,
        linked: true,
        run_count: 1,
        output: null,
      },
    ],
  );
  t.equal(report.runs, 3);
  const [uploaded] = await sql`select last_run_id, run_count from scripts where id = ${ids.s3!}`;
  t.same({ ...uploaded }, { last_run_id: null, run_count: 0 }, 'a script that never ran has no run');

  // Statistics counters moved with the load.
  const stats = await app.repos.stats.scriptStats();
  t.equal(stats.total_scripts, 4);
  t.same(stats.by_status, { uploaded: 1, queued: 0, running: 0, completed: 1, failed: 2, cancelled: 0 });
  t.same(
    (await app.repos.stats.topUsers(5)).map((u) => [u.user_id, u.script_count]),
    [
      [ids.alice, 2],
      [ids.bob, 2],
    ],
  );
  t.equal((await app.repos.stats.userStats()).total, 3);

  // A re-run changes nothing, and says so.
  const before = await fingerprint(sql);
  const again = await run(app, legacy.url, filesDir, path.join(reportDir, 'again.csv'));
  t.equal(again.changed, false);
  t.equal(again.empty_target_fast_path, false);
  t.same(again.users, { source: 6, imported: 0, already_present: 3, refused: 3 });
  t.same(again.scripts, { source: 7, imported: 0, already_present: 4, refused: 3, files_missing: 1 });
  t.same(await fingerprint(sql), before, 'the second run changed no row');
  t.equal(
    await readFile(again.details_file, 'utf8'),
    details,
    'and refused the same rows for the same reasons',
  );

  // The report as the CLI prints it: the first run, then the re-run.
  const printed = formatReport(report).split('\n');
  t.match(
    printed[0],
    /^import-legacy: imported in [0-9.]+ s \([0-9,]+ rows\/s\), empty database: indexes built after the load$/,
  );
  t.same(printed.slice(1), [
    '  users            6 in the old database: 3 imported, 0 already here, 3 refused',
    '  scripts          7 in the old database: 4 imported, 0 already here, 3 refused',
    `  runs (each script's last execution): 3, of which "interrupted by the migration": 1`,
    '  refused, by reason:',
    '          1  user: email is not an email address',
    "          1  user: email is the same as user N's after lower-casing (the older account is kept)",
    '          1  user: email user without a password hash',
    '          1  script: file missing',
    '          1  script: filename is not <uuid><extension>',
    '          1  script: its user N is refused',
    `  every refused row, with its reason: ${report.details_file}`,
  ]);
  t.match(
    formatReport(again).split('\n')[0],
    /^import-legacy: nothing changed: every row was already imported or is refused \([0-9.]+ s\)$/,
    'a re-run says it changed nothing',
  );

  // The sequences moved past the imported ids.
  const [next] = await sql`
    insert into users (email, username, hashed_password)
    values ('new@example.com', 'newbie', '$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA')
    returning id
  `;
  t.ok(next!.id > ids.nohash!, 'a new user gets an id past every imported one');

  // Sign-in with the old passwords; the hash becomes argon2id at the first one.
  const login = (email: string, password: string) =>
    app.app.inject({ method: 'POST', url: LOGIN, payload: { email, password } });
  t.equal((await login('alice@example.com', 'wrong password')).statusCode, 401);
  t.equal((await login('alice@example.com', 'old password 1')).statusCode, 200);
  const [after] = await sql`select hashed_password from users where id = ${ids.alice!}`;
  t.match(after!.hashed_password, /^\$argon2id\$/, 'rehashed to argon2id at the first sign-in');
  t.equal(
    (await login('alice@example.com', 'old password 1')).statusCode,
    200,
    'and the password still works',
  );
  // bob is inactive: the password is proven (403, not 401), and the hash stays as it was.
  t.equal((await login('bob@example.com', LONG_PASSWORD)).statusCode, 403);
  t.equal((await login('bob@example.com', LONG_PASSWORD.slice(0, -1))).statusCode, 401);
  await sql`update users set is_active = true where id = ${ids.bob!}`;
  t.equal(
    (await login('bob@example.com', LONG_PASSWORD)).statusCode,
    200,
    'a password past 72 bytes (SHA-256 pre-hash)',
  );
  const [bob] = await sql`select hashed_password from users where id = ${ids.bob!}`;
  t.match(bob!.hashed_password, /^\$argon2id\$/);
});

t.test('a create_all-built database (upper-case labels) into a database already in use', async (t) => {
  const app = await testApp(t);
  const sql = app.database.sql;
  const legacy = await legacyDatabase(t, 'upper');
  const { filesDir, reportDir } = await folders(t);
  // Ids far past this database's own users, except one taken on purpose.
  const { ids } = await seed(legacy.sql, 'upper', filesDir, 1000);
  const existing = await app.repos.users.create({
    email: 'bob@example.com',
    username: 'here_first',
    hashed_password: '$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA',
  });
  const schemaBefore = await indexesAndKeys(sql);

  const report = await run(app, legacy.url, filesDir, path.join(reportDir, 'refused.csv'));
  t.equal(report.empty_target_fast_path, false, 'a database in use keeps its indexes during the load');
  t.same(report.users, { source: 6, imported: 2, already_present: 0, refused: 4 });
  t.same(await indexesAndKeys(sql), schemaBefore);
  const details = await readFile(report.details_file, 'utf8');
  t.match(details, `user,${ids.bob},email already belongs to user ${existing.id} of this database`);
  t.match(details, `script,${ids.s3},its user ${ids.bob} is refused`);
  const rows = await sql`select id, status::text from scripts order by id`;
  t.same(
    rows.map((r) => [r.id, r.status]),
    [
      [ids.s1, 'completed'],
      [ids.s2, 'failed'],
    ],
    'upper-case labels are read as ours',
  );
  const [{ provider }] =
    (await sql`select auth_provider::text as provider from users where id = ${ids.carol!}`) as [
      { provider: string },
    ];
  t.equal(provider, 'google');
  t.equal((await app.repos.stats.scriptStats()).total_scripts, 2);
  const linked = await sql`
    select s.id, s.run_count, r.status::text from scripts as s join script_runs as r on r.id = s.last_run_id
    order by s.id
  `;
  t.same(
    linked.map((r) => [r.id, r.run_count, r.status]),
    [
      [ids.s1, 1, 'completed'],
      [ids.s2, 1, 'failed'],
    ],
    'the slow path links each script to its run too',
  );
});

t.test('only the import writes bcrypt hashes', async (t) => {
  const app = await testApp(t);
  const sql = app.database.sql;
  const hash = bcryptjs.hashSync('whatever', 4);
  const user = await app.repos.users.create({
    email: 'someone@example.com',
    username: 'someone',
    hashed_password: '$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA',
  });
  await rejectsWith(t, app.repos.users.update(user.id, { hashed_password: hash }), ValidationError);
  await rejectsWith(
    t,
    app.repos.users.create({ email: 'other@example.com', username: 'other', hashed_password: hash }),
    ValidationError,
  );
  const constraintOf = (q: Promise<unknown>) =>
    q.then(
      () => 'no error',
      (e: { constraint_name?: string }) => e.constraint_name,
    );
  t.equal(
    await constraintOf(
      sql`insert into users (email, username, hashed_password) values ('x@example.com', 'xxx', ${hash})`,
    ),
    'ck_users_hashed_password_argon2id',
    'raw SQL outside the import is refused too',
  );
  t.equal(
    await constraintOf(sql`update users set hashed_password = ${'$2b$12$short'} where id = ${user.id}`),
    'ck_users_hashed_password_argon2id',
    'a malformed bcrypt hash is refused by the check',
  );
});
