/**
 * Every rule of the schema, broken on purpose in raw SQL (no repository, no
 * TypeScript validation in between): each attempt must fail with the right
 * SQLSTATE and the right constraint name, which is what the error mapper and
 * the API's error answers rely on. Also: the generated column, the updated_at
 * triggers, the cascade of users to scripts (their runs: run-constraints.test.ts),
 * and the status machine trigger against SCRIPT_TRANSITIONS.
 */
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import t, { type Test } from 'tap';
import { SCRIPT_STATUSES, type ScriptStatus } from '../../src/domain/enums.ts';
import { canTransition } from '../../src/domain/script.ts';
import { testDatabase } from '../helpers/db.ts';
import { FAKE_HASH } from '../helpers/fixtures.ts';

type Row = Record<string, unknown>;
/** One attempt that must fail: what it is, how, and the SQLSTATE and constraint (or column, for 23502). */
type Case = [label: string, attempt: () => Promise<unknown>, code: string, name: string | null];

const tag = () => randomBytes(5).toString('hex');
const sha = (c = 'a') => c.repeat(64);
const T1 = new Date('2024-01-01T00:00:00Z');
const T2 = new Date('2024-01-01T00:01:00Z');
const T3 = new Date('2024-01-01T00:02:00Z');
const T4 = new Date('2024-01-01T00:03:00Z');
const LONG_AGO = new Date('2000-01-01T00:00:00.000Z');
const LONG_AGO_ISO = LONG_AGO.toISOString();
/** A script whose latest run is queued (the run holds the queue columns). */
const QUEUED: Row = { status: 'queued' };
/** What a script needs to be validly `running`: started. */
const RUNNING: Row = { status: 'running', started_at: T1 };
const NO_SUCH_ID = 2 ** 53 - 1;

// SQLSTATEs.
const CHECK = '23514';
const UNIQUE = '23505';
const FOREIGN_KEY = '23503';
const NOT_NULL = '23502';
const OVERFLOW = '22003';
const BAD_TEXT = '22P02';
const GENERATED_ALWAYS = '428C9';

/** Names of the constraints that some case broke as expected (checked against the catalog at the end). */
const broken = new Set<string>();

/** Asserts that `attempt` fails with SQLSTATE `code` and constraint `name` (column for not-null). */
async function expectViolation(t: Test, [label, attempt, code, name]: Case): Promise<void> {
  let error: unknown;
  try {
    await attempt();
  } catch (e) {
    error = e;
  }
  if (!(error instanceof postgres.PostgresError)) {
    t.fail(`${label}: expected ${code} ${name ?? ''}`, { found: error === undefined ? 'success' : error });
    return;
  }
  const found = code === NOT_NULL ? error.column_name : error.constraint_name;
  const ok = t.strictSame(
    { code: error.code, name: found ?? null },
    { code, name },
    `${label}: ${code} ${name ?? ''}`,
  );
  if (ok && name !== null && code !== NOT_NULL) broken.add(name);
}

t.test('constraints of users and scripts', async (t) => {
  const { sql } = await testDatabase(t);

  /** A valid email user, with `overrides` applied, inserted as raw SQL. */
  const validUser = (): Row => {
    const id = tag();
    return { email: `u${id}@example.com`, username: `user_${id}`, hashed_password: FAKE_HASH };
  };
  const insertUser = async (overrides: Row = {}): Promise<Row & { id: number }> => {
    const [row] = await sql<(Row & { id: number })[]>`
      insert into users ${sql({ ...validUser(), ...overrides })} returning *
    `;
    return row!;
  };

  // Rows the uniqueness cases collide with.
  const taken = await insertUser({
    email: 'taken@example.com',
    google_id: 'google-taken',
    ibkr_user_id: 'ibkr-taken',
    ibkr_connected_at: T1,
  });
  const owner = await insertUser();

  const validScript = (): Row => {
    const id = tag();
    return {
      user_id: owner.id,
      filename: `${id}.py`,
      original_filename: `strategy ${id}.py`,
      file_path: `/nonexistent/${id}.py`,
      file_size: 100,
      file_extension: '.py',
      sha256: sha(),
    };
  };
  const insertScript = async (overrides: Row = {}): Promise<Row & { id: number }> => {
    const [row] = await sql<(Row & { id: number })[]>`
      insert into scripts ${sql({ ...validScript(), ...overrides })} returning *
    `;
    return row!;
  };
  const takenScript = await insertScript({ filename: 'taken.py' });
  // Attempts for the tables below: a valid row with these overrides, inserted when the case runs.
  const user = (overrides: Row) => () => insertUser(overrides);
  const script = (overrides: Row) => () => insertScript(overrides);

  await t.test('valid rows and boundary values are accepted', async (t) => {
    // biome-ignore format: a table, one case a line
    const accepted: Array<[string, () => Promise<unknown>]> = [
      ['email user', user({})],
      ['google user without password', user({ auth_provider: 'google', google_id: tag(), hashed_password: null })],
      ['email of 254 characters', user({ email: `${'a'.repeat(242)}@example.com` })],
      ['username of 3 characters', user({ username: 'a-_' })],
      ['username of 100 characters', user({ username: 'Z'.repeat(100) })],
      ['google_id of 255 characters', user({ google_id: 'g'.repeat(255) })],
      ['ibkr_user_id of 100 characters', user({ ibkr_user_id: 'i'.repeat(100), ibkr_connected_at: T1 })],
      ['IBKR account with tokens', user({ ibkr_user_id: tag(), ibkr_access_token: 'c', ibkr_refresh_token: 'r', ibkr_token_expires_at: T2, ibkr_connected_at: T1 })],
      ['.py script', script({})],
      ['.js script', script({ filename: `${tag()}.js`, file_extension: '.js' })],
      ['.ts script', script({ filename: `${tag()}.ts`, file_extension: '.ts' })],
      ['original_filename of 255 characters', script({ original_filename: 'o'.repeat(255) })],
      ['zero execution time and memory', script({ execution_time_seconds: 0, memory_usage_mb: 0 })],
      ['largest numeric(10,3) and numeric(10,2)', script({ execution_time_seconds: 9999999.999, memory_usage_mb: 99999999.99 })],
      ['queued with queued_at', script(QUEUED)],
      ['running with started_at', script(RUNNING)],
      ['completed at the instant it started', script({ status: 'completed', started_at: T1, completed_at: T1 })],
      ['cancelled run', script({ ...RUNNING, status: 'cancelled', completed_at: T2 })],
    ];
    for (const [label, attempt] of accepted) await t.resolves(attempt(), label);
  });

  await t.test('users: each check, unique and primary key', async (t) => {
    // biome-ignore format: a table, one case a line
    const cases: Case[] = [
      ['email without @', user({ email: 'user.example.com' }), CHECK, 'ck_users_email_format'],
      ['email with two @', user({ email: 'a@b@example.com' }), CHECK, 'ck_users_email_format'],
      ['email without a dot in the domain', user({ email: 'a@localhost' }), CHECK, 'ck_users_email_format'],
      ['email with a space inside', user({ email: 'a b@example.com' }), CHECK, 'ck_users_email_format'],
      ['email with a no-break space', user({ email: 'a\u00a0b@example.com' }), CHECK, 'ck_users_email_format'],
      ['email with a byte-order mark', user({ email: '\ufeffab@example.com' }), CHECK, 'ck_users_email_format'],
      // Untrimmed emails are also outside ck_users_email_lower_case, but the format check
      // (checked first: PostgreSQL checks in name order) already refuses any whitespace.
      ['email not trimmed', user({ email: ' a@example.com ' }), CHECK, 'ck_users_email_format'],
      ['email with a trailing tab', user({ email: 'a@example.com\t' }), CHECK, 'ck_users_email_format'],
      ['email of 255 characters', user({ email: `${'a'.repeat(243)}@example.com` }), CHECK, 'ck_users_email_format'],
      ['empty email', user({ email: '' }), CHECK, 'ck_users_email_format'],
      ['email not lower-case', user({ email: 'User@Example.com' }), CHECK, 'ck_users_email_lower_case'],
      ['taken email in upper case', user({ email: 'TAKEN@example.com' }), CHECK, 'ck_users_email_lower_case'],
      ['username too short', user({ username: 'ab' }), CHECK, 'ck_users_username_format'],
      ['empty username', user({ username: '' }), CHECK, 'ck_users_username_format'],
      ['username too long', user({ username: 'a'.repeat(101) }), CHECK, 'ck_users_username_format'],
      ['username with a space', user({ username: 'bad name' }), CHECK, 'ck_users_username_format'],
      ['username with a dot', user({ username: 'bad.name' }), CHECK, 'ck_users_username_format'],
      ['username with @', user({ username: 'bad@name' }), CHECK, 'ck_users_username_format'],
      ['username with a final newline', user({ username: 'name\n' }), CHECK, 'ck_users_username_format'],
      ['username not ASCII', user({ username: 'jürgen' }), CHECK, 'ck_users_username_format'],
      ['plain-text password', user({ hashed_password: 'hunter22' }), CHECK, 'ck_users_hashed_password_argon2id'],
      ['argon2i hash', user({ hashed_password: FAKE_HASH.replace('argon2id', 'argon2i') }), CHECK, 'ck_users_hashed_password_argon2id'],
      ['bcrypt hash', user({ hashed_password: '$2b$12$abcdefghijklmnopqrstuv' }), CHECK, 'ck_users_hashed_password_argon2id'],
      ['empty hash', user({ hashed_password: '' }), CHECK, 'ck_users_hashed_password_argon2id'],
      ['email user without password', user({ hashed_password: null }), CHECK, 'ck_users_email_user_has_password'],
      ['google user without google_id', user({ auth_provider: 'google', hashed_password: null }), CHECK, 'ck_users_google_user_has_google_id'],
      ['empty google_id', user({ google_id: '' }), CHECK, 'ck_users_google_id_length'],
      ['google_id of 256 characters', user({ google_id: 'g'.repeat(256) }), CHECK, 'ck_users_google_id_length'],
      ['empty ibkr_user_id', user({ ibkr_user_id: '', ibkr_connected_at: T1 }), CHECK, 'ck_users_ibkr_user_id_length'],
      ['ibkr_user_id of 101 characters', user({ ibkr_user_id: 'i'.repeat(101), ibkr_connected_at: T1 }), CHECK, 'ck_users_ibkr_user_id_length'],
      ['access token without account', user({ ibkr_access_token: 'c' }), CHECK, 'ck_users_ibkr_fields_need_account'],
      ['refresh token without account', user({ ibkr_refresh_token: 'r' }), CHECK, 'ck_users_ibkr_fields_need_account'],
      ['token expiry without account', user({ ibkr_token_expires_at: T1 }), CHECK, 'ck_users_ibkr_fields_need_account'],
      ['connected_at without account', user({ ibkr_connected_at: T1 }), CHECK, 'ck_users_ibkr_fields_need_account'],
      ['unlinking IBKR, connected_at kept', () => sql`update users set ibkr_user_id = null where id = ${taken.id}`, CHECK, 'ck_users_ibkr_fields_need_account'],
      ['IBKR account without connected_at', user({ ibkr_user_id: tag() }), CHECK, 'ck_users_ibkr_connected_at'],
      ['duplicate email', user({ email: 'taken@example.com' }), UNIQUE, 'uq_users_email'],
      ['duplicate google_id', user({ google_id: 'google-taken' }), UNIQUE, 'uq_users_google_id'],
      ['duplicate ibkr_user_id', user({ ibkr_user_id: 'ibkr-taken', ibkr_connected_at: T1 }), UNIQUE, 'uq_users_ibkr_user_id'],
      ['duplicate id', () => sql`insert into users (id, email, username, hashed_password) overriding system value values (${taken.id}, 'pk@example.com', 'pk_user', ${FAKE_HASH})`, UNIQUE, 'pk_users'],
      ['auth_provider not in the enum', user({ auth_provider: 'github' }), BAD_TEXT, null],
      ['role not in the enum', user({ role: 'root' }), BAD_TEXT, null],
    ];
    for (const c of cases) await expectViolation(t, c);
  });

  await t.test('scripts: each check, unique, primary key and foreign key', async (t) => {
    // biome-ignore format: a table, one case a line
    const cases: Case[] = [
      ['zero file size', script({ file_size: 0 }), CHECK, 'ck_scripts_positive_file_size'],
      ['negative file size', script({ file_size: -1 }), CHECK, 'ck_scripts_positive_file_size'],
      ['.exe extension', script({ filename: 'x.exe', file_extension: '.exe' }), CHECK, 'ck_scripts_file_extension'],
      ['upper-case extension', script({ filename: 'x.PY', file_extension: '.PY' }), CHECK, 'ck_scripts_file_extension'],
      ['extension without dot', script({ filename: 'x.py', file_extension: 'py' }), CHECK, 'ck_scripts_file_extension'],
      ['empty extension', script({ filename: 'x.py', file_extension: '' }), CHECK, 'ck_scripts_file_extension'],
      ['filename of another extension', script({ filename: `${tag()}.js` }), CHECK, 'ck_scripts_filename_extension'],
      ['filename without extension', script({ filename: tag() }), CHECK, 'ck_scripts_filename_extension'],
      ['filename extension in upper case', script({ filename: `${tag()}.PY` }), CHECK, 'ck_scripts_filename_extension'],
      ['sha256 in upper case', script({ sha256: sha('A') }), CHECK, 'ck_scripts_sha256_format'],
      ['sha256 of 63 digits', script({ sha256: 'a'.repeat(63) }), CHECK, 'ck_scripts_sha256_format'],
      ['sha256 of 65 digits', script({ sha256: 'a'.repeat(65) }), CHECK, 'ck_scripts_sha256_format'],
      ['sha256 not hex', script({ sha256: sha('g') }), CHECK, 'ck_scripts_sha256_format'],
      ['sha256 with a final newline', script({ sha256: `${sha()}\n` }), CHECK, 'ck_scripts_sha256_format'],
      ['empty original filename', script({ original_filename: '' }), CHECK, 'ck_scripts_original_filename_length'],
      ['original filename of 256 characters', script({ original_filename: 'o'.repeat(256) }), CHECK, 'ck_scripts_original_filename_length'],
      ['negative execution time', script({ execution_time_seconds: -0.001 }), CHECK, 'ck_scripts_execution_time_non_negative'],
      ['negative memory', script({ memory_usage_mb: -0.01 }), CHECK, 'ck_scripts_memory_usage_non_negative'],
      ['execution time of 1e7 s', script({ execution_time_seconds: 1e7 }), OVERFLOW, null],
      ['execution time rounding up to 1e7 s', script({ execution_time_seconds: 9999999.9995 }), OVERFLOW, null],
      ['memory of 1e8 MB', script({ memory_usage_mb: 1e8 }), OVERFLOW, null],
      ['running without started_at', script({ ...RUNNING, started_at: null }), CHECK, 'ck_scripts_running_has_started_at'],
      ['completed without completed_at', script({ status: 'completed', started_at: T1 }), CHECK, 'ck_scripts_finished_has_completed_at'],
      ['failed without completed_at', script({ status: 'failed', started_at: T1 }), CHECK, 'ck_scripts_finished_has_completed_at'],
      ['cancelled without completed_at', script({ status: 'cancelled' }), CHECK, 'ck_scripts_finished_has_completed_at'],
      ['completed before started', script({ status: 'completed', started_at: T2, completed_at: T1 }), CHECK, 'ck_scripts_completed_after_started'],
      ['restart keeping an older completed_at', () => sql`update scripts set started_at = ${T2}, completed_at = ${T1} where id = ${takenScript.id}`, CHECK, 'ck_scripts_completed_after_started'],
      ['status not in the enum', script({ status: 'paused' }), BAD_TEXT, null],
      ['user that does not exist', script({ user_id: NO_SUCH_ID }), FOREIGN_KEY, 'fk_scripts_user'],
      ['negative run_count', script({ run_count: -1 }), CHECK, 'ck_scripts_run_count_non_negative'],
      ['a latest run that does not exist', script({ last_run_id: NO_SUCH_ID }), FOREIGN_KEY, 'fk_scripts_last_run'],
      ['duplicate filename', script({ filename: 'taken.py' }), UNIQUE, 'uq_scripts_filename'],
      ['duplicate id', () => sql`insert into scripts (id, user_id, filename, original_filename, file_path, file_size, file_extension, sha256) overriding system value values (${takenScript.id}, ${owner.id}, 'pk.py', 'pk.py', '/x/pk.py', 1, '.py', ${sha()})`, UNIQUE, 'pk_scripts'],
    ];
    for (const c of cases) await expectViolation(t, c);
  });

  await t.test('every NOT NULL column refuses null', async (t) => {
    // From the catalog, so that a column added later is covered without editing this test.
    const columns = await sql<{ table: string; column: string }[]>`
      select c.relname as table, a.attname as column
      from pg_attribute a join pg_class c on c.oid = a.attrelid
      where c.relname in ('users', 'scripts') and c.relnamespace = 'public'::regnamespace
        and a.attnum > 0 and not a.attisdropped and a.attnotnull
        and a.attidentity = '' and a.attgenerated = ''
      order by c.relname, a.attnum
    `;
    t.ok(columns.length >= 18, `${columns.length} NOT NULL columns`);
    const inserts: Record<string, (overrides: Row) => Promise<unknown>> = {
      users: insertUser,
      scripts: insertScript,
    };
    for (const { table, column } of columns) {
      const attempt = () => inserts[table]!({ [column]: null });
      await expectViolation(t, [`${table}.${column} null`, attempt, NOT_NULL, column]);
    }
  });

  await t.test('is_ibkr_connected follows ibkr_user_id and cannot be written', async (t) => {
    const u = await insertUser();
    t.equal(u.is_ibkr_connected, false, 'false without an account');
    const connected = await sql<{ is_ibkr_connected: boolean }[]>`
      update users set ibkr_user_id = ${tag()}, ibkr_connected_at = now() where id = ${u.id}
      returning is_ibkr_connected
    `;
    t.equal(connected[0]?.is_ibkr_connected, true, 'true once linked');
    const unlinked = await sql<{ is_ibkr_connected: boolean }[]>`
      update users set ibkr_user_id = null, ibkr_connected_at = null where id = ${u.id}
      returning is_ibkr_connected
    `;
    t.equal(unlinked[0]?.is_ibkr_connected, false, 'false once unlinked');
    const [counts] = await sql<{ wrong: number }[]>`
      select count(*) as wrong from users where is_ibkr_connected <> (ibkr_user_id is not null)
    `;
    t.equal(counts?.wrong, 0, 'agrees with ibkr_user_id on every row');
    await expectViolation(t, [
      'insert a value',
      () => insertUser({ is_ibkr_connected: true }),
      GENERATED_ALWAYS,
      null,
    ]);
    await expectViolation(t, [
      'update to a value',
      () => sql`update users set is_ibkr_connected = true where id = ${u.id}`,
      GENERATED_ALWAYS,
      null,
    ]);
  });

  await t.test('users.updated_at changes on a real change only', async (t) => {
    const updatedAt = async (id: number) =>
      (
        await sql<{ updated_at: Date }[]>`select updated_at from users where id = ${id}`
      )[0]!.updated_at.toISOString();
    // A user whose every column can change without breaking a check (e.g. to auth_provider google).
    const base = () => ({
      google_id: tag(),
      ibkr_user_id: tag(),
      ibkr_connected_at: T1,
      updated_at: LONG_AGO,
    });
    const u = await insertUser(base());
    t.equal(await updatedAt(u.id), LONG_AGO_ISO, 'an insert keeps the given updated_at');

    await sql`update users set email = email, username = username, role = role, is_active = is_active where id = ${u.id}`;
    t.equal(await updatedAt(u.id), LONG_AGO_ISO, 'a no-op update leaves it');
    await sql`update users set last_login_at = now() where id = ${u.id}`;
    t.equal(await updatedAt(u.id), LONG_AGO_ISO, 'a sign-in (last_login_at only) leaves it');

    // Each column of what a user is; the list is checked against the catalog below.
    const changes: Record<string, unknown> = {
      email: `changed${tag()}@example.com`,
      username: `changed_${tag()}`,
      hashed_password: `${FAKE_HASH}x`,
      auth_provider: 'google',
      google_id: tag(),
      role: 'admin',
      is_active: false,
      is_verified: true,
      ibkr_user_id: tag(),
      ibkr_access_token: 'ciphertext',
      ibkr_refresh_token: 'ciphertext',
      ibkr_token_expires_at: T2,
      ibkr_connected_at: T2,
    };
    for (const [column, value] of Object.entries(changes)) {
      const v = await insertUser(base());
      await sql`update users set ${sql({ [column]: value })} where id = ${v.id}`;
      t.ok((await updatedAt(v.id)) > LONG_AGO_ISO, `a change of ${column} sets it`);
    }
    const exempt = ['id', 'created_at', 'updated_at', 'last_login_at', 'is_ibkr_connected'];
    const columns = await sql<{ column_name: string }[]>`
      select column_name from information_schema.columns
      where table_schema = 'public' and table_name = 'users' order by ordinal_position
    `;
    t.strictSame(
      Object.keys(changes).sort(),
      columns
        .map((c) => c.column_name)
        .filter((c) => !exempt.includes(c))
        .sort(),
      'every column but the exempt ones is tried',
    );
  });

  await t.test('scripts.updated_at changes on update', async (t) => {
    const updatedAt = async (id: number) =>
      (
        await sql<{ updated_at: Date }[]>`select updated_at from scripts where id = ${id}`
      )[0]!.updated_at.toISOString();
    const s = await insertScript({ updated_at: LONG_AGO });
    await sql`update scripts set error_message = error_message, status = status where id = ${s.id}`;
    t.equal(await updatedAt(s.id), LONG_AGO_ISO, 'a no-op update leaves it');
    await sql`update scripts set error_message = 'line 1' where id = ${s.id}`;
    const first = await updatedAt(s.id);
    t.ok(first > LONG_AGO_ISO, 'a change sets it');
    await sql`update scripts set status = 'queued' where id = ${s.id}`;
    t.ok((await updatedAt(s.id)) > first, 'a later change moves it again');
    await sql`update scripts set updated_at = ${LONG_AGO} where id = ${s.id}`;
    t.ok((await updatedAt(s.id)) > LONG_AGO_ISO, 'updated_at cannot be set back by hand');
  });

  await t.test('deleting a user deletes its scripts', async (t) => {
    const doomed = await insertUser();
    const kept = await insertUser();
    for (const userId of [doomed.id, doomed.id, kept.id]) await insertScript({ user_id: userId });
    const deleted = await sql`delete from users where id = ${doomed.id}`;
    t.equal(deleted.count, 1);
    const [scripts] = await sql<{ doomed: number; kept: number }[]>`
      select count(*) filter (where user_id = ${doomed.id}) as doomed,
             count(*) filter (where user_id = ${kept.id}) as kept
      from scripts
    `;
    t.strictSame(scripts, { doomed: 0, kept: 1 }, 'its scripts are gone, others are not');
  });

  await t.test('the status machine trigger agrees with SCRIPT_TRANSITIONS', async (t) => {
    // What a script needs to sit validly in a status (inserts bypass the trigger, not the checks).
    const inStatus = (status: ScriptStatus): Row => {
      if (status === 'queued') return QUEUED;
      if (status === 'running') return RUNNING;
      if (status === 'completed' || status === 'failed' || status === 'cancelled')
        return { status, started_at: T1, completed_at: T2 };
      return { status };
    };
    // What the UPDATE to a status sets alongside, as the repositories do: a queueing
    // clears the last run's outcome, a claim starts the run.
    // So every allowed transition yields a valid row, and only the trigger can refuse.
    const toStatus = (status: ScriptStatus): Row => {
      if (status === 'queued') return { status, started_at: null, completed_at: null };
      if (status === 'running') return { status, started_at: T3, completed_at: null };
      if (status === 'completed' || status === 'failed' || status === 'cancelled')
        return { status, completed_at: T4 };
      return { status };
    };
    let allowed = 0;
    let pairs = 0;
    for (const from of SCRIPT_STATUSES) {
      for (const to of SCRIPT_STATUSES) {
        if (from === to) continue;
        pairs++;
        const s = await insertScript(inStatus(from));
        const attempt = () =>
          sql`update scripts set ${sql(toStatus(to))} where id = ${s.id} returning status`;
        if (canTransition(from, to)) {
          allowed++;
          const result = await attempt().then(
            (rows) => rows.map((r) => r.status),
            (e: unknown) => e,
          );
          t.strictSame(result, [to], `${from} → ${to} is allowed`);
        } else {
          const refused = `${from} → ${to} is refused`;
          await expectViolation(t, [refused, attempt, CHECK, 'ck_scripts_status_transition']);
        }
      }
    }
    // API.md: uploaded|completed|failed|cancelled → queued, queued → running|cancelled,
    // running → completed|failed|cancelled.
    t.equal(pairs, 30, 'thirty (from, to) pairs tried');
    t.equal(allowed, 9, 'nine allowed transitions');
    for (const status of SCRIPT_STATUSES) {
      const s = await insertScript(inStatus(status));
      await t.resolves(
        sql`update scripts set status = ${status} where id = ${s.id}`,
        `${status} → ${status} is a no-op`,
      );
    }
  });

  await t.test('every constraint of users and scripts was broken by a case', async (t) => {
    // From the catalog: a constraint added to the schema without a case here fails this test.
    const rows = await sql<{ conname: string }[]>`
      select conname from pg_constraint
      where conrelid in ('users'::regclass, 'scripts'::regclass)
        and contype in ('p', 'u', 'f', 'c')
      order by conname
    `;
    const constraints = [...rows.map((r) => r.conname), 'ck_scripts_status_transition'];
    t.equal(constraints.length, 31, '30 constraints and the status trigger');
    // (id, user_id) is unique because id is: pk_scripts always fires first. It exists as the
    // target of fk_script_runs_script, which test/db/run-constraints.test.ts breaks.
    const implied = ['uq_scripts_id_user'];
    t.strictSame(
      constraints.filter((name) => !broken.has(name) && !implied.includes(name)),
      [],
      'none left unbroken',
    );
    t.strictSame(
      [...broken].filter((name) => !constraints.includes(name)),
      [],
      'no case names a constraint that does not exist',
    );
  });
});
