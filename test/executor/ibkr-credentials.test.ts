/**
 * IBKR credentials in a run's environment: only with ibkr_access and a linked account,
 * read when the run starts (an unlink while queued wins), and never in the executor's
 * logs, the run's error, or any process's command line. A stored token the executor
 * cannot decrypt is left out of the run (the others still come), named in a warning and
 * in the run's output, and neither it nor its ciphertext shows anywhere. A link that cannot
 * be read fails the run before it starts; a run cancelled while it is read never starts.
 */

import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import t, { type Test } from 'tap';
import { SecretBox } from '../../src/services/secret-box.ts';
import { ibkrContext } from '../../src/services/user-service.ts';
import { signUp } from '../helpers/app.ts';
import { eventually, execute, executorFixture, logsOf, upload, waitFor } from '../helpers/executor.ts';
import { captureLogger } from '../helpers/log-capture.ts';

const ACCESS = `ACCESS-${'a1b2c3'.repeat(6)}-secret`;
const REFRESH = `REFRESH-${'z9y8x7'.repeat(6)}-secret`;
const EXPIRES = '2031-05-06T07:08:09.000Z';

const sha = (text: string) => createHash('sha256').update(text).digest('hex');

// Prints which variables it got, and hashes of their values: never the values.
const REPORT = `
import hashlib, os, sys, time
for name in ['IBKR_USER_ID', 'IBKR_ACCESS_TOKEN', 'IBKR_REFRESH_TOKEN', 'IBKR_TOKEN_EXPIRES_AT']:
    value = os.environ.get(name)
    print(name, 'unset' if value is None else hashlib.sha256(value.encode()).hexdigest())
print('fd3', 'open' if os.path.exists('/proc/self/fd/3') else 'closed')
sys.stdout.flush()
`;
const SCRIPT = `${REPORT}
time.sleep(float(os.environ.get('DC_SLEEP', '0')) or (2 if 'IBKR_USER_ID' in os.environ else 0))
`;
// A strategy that cannot trade without its access token: its run fails, with an error_message.
const NEEDS_ACCESS = `${REPORT}
if 'IBKR_ACCESS_TOKEN' not in os.environ:
    sys.exit('no IBKR access token; giving up')
`;

/** What the script reported (its other lines aside); `fd3` only when the variables came (through that pipe). */
function seen(output: string): Record<string, string> {
  const got: Record<string, string> = {};
  for (const line of output.split('\n')) {
    const [name, value] = line.split(' ');
    if (name && value && (name === 'fd3' || name.startsWith('IBKR_'))) got[name] = value;
  }
  if (got.IBKR_USER_ID === 'unset') delete got.fd3;
  return got;
}

const NONE = {
  IBKR_USER_ID: 'unset',
  IBKR_ACCESS_TOKEN: 'unset',
  IBKR_REFRESH_TOKEN: 'unset',
  IBKR_TOKEN_EXPIRES_AT: 'unset',
};

/** Command lines of every process on the host that mention `text`. */
/** Links the owner's IBKR account (ACCESS, REFRESH) as the front end does. */
function linkIbkr(app: FastifyInstance, owner: { headers: Record<string, string> }, ibkrUserId: string) {
  return app.inject({
    method: 'PUT',
    url: '/api/v1/me/ibkr',
    headers: owner.headers,
    payload: {
      ibkr_user_id: ibkrUserId,
      access_token: ACCESS,
      refresh_token: REFRESH,
      token_expires_at: EXPIRES,
    },
  });
}

/** Turns the script's ibkr_access on or off, as its owner does. */
function setIbkrAccess(
  app: FastifyInstance,
  owner: { headers: Record<string, string> },
  id: number,
  on: boolean,
) {
  return app.inject({
    method: 'PATCH',
    url: `/api/v1/scripts/${id}`,
    headers: owner.headers,
    payload: { ibkr_access: on },
  });
}

/** An executor fixture with an owner whose IBKR account is linked and a script of theirs with ibkr_access. */
async function ownerWithAccess(t: Test, ibkrUserId: string) {
  const f = await executorFixture(t);
  const owner = await signUp(f.app);
  t.equal((await linkIbkr(f.app, owner, ibkrUserId)).statusCode, 200);
  const id = await upload(f, owner, 'creds.py', SCRIPT);
  t.equal((await setIbkrAccess(f.app, owner, id, true)).statusCode, 200);
  return { f, owner, id };
}

async function cmdlinesWith(text: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(text)) found.push(`${entry}: ${cmdline.replaceAll('\0', ' ')}`);
  }
  return found;
}

t.test('IBKR credentials reach a run only with ibkr_access and a link, read at start', async (t) => {
  const f = await executorFixture(t);
  const { app } = f;
  const owner = await signUp(app);
  const ibkrUserId = `U${process.pid}77`;
  const link = () => linkIbkr(app, owner, ibkrUserId);
  t.equal((await link()).statusCode, 200);
  const id = await upload(f, owner, 'creds.py', SCRIPT);
  const grant = (on: boolean) => setIbkrAccess(app, owner, id, on);
  t.equal((await grant(true)).statusCode, 200);

  // Queued with access and a link, then unlinked before any executor runs it.
  t.equal((await execute(f, owner, id)).statusCode, 202);
  t.equal(
    (await app.inject({ method: 'DELETE', url: '/api/v1/me/ibkr', headers: owner.headers })).statusCode,
    200,
  );
  const { log, text } = captureLogger('trace');
  await f.startExecutor({}, { log });
  t.equal((await waitFor(f, id)).status, 'completed');
  t.same(seen(await logsOf(f, id)), NONE, 'unlinked while queued: none of them');

  // Linked again, with access: all four, exactly.
  t.equal((await link()).statusCode, 200);
  t.equal((await execute(f, owner, id)).statusCode, 202);
  await waitFor(f, id, (s) => s.status === 'running');
  t.same(await cmdlinesWith(ACCESS), [], 'no command line on the host holds the token');
  t.same(await cmdlinesWith(REFRESH), []);
  const script = await waitFor(f, id);
  t.equal(script.status, 'completed');
  t.same(
    seen(await logsOf(f, id)),
    {
      IBKR_USER_ID: sha(ibkrUserId),
      IBKR_ACCESS_TOKEN: sha(ACCESS),
      IBKR_REFRESH_TOKEN: sha(REFRESH),
      IBKR_TOKEN_EXPIRES_AT: sha(EXPIRES),
      fd3: 'closed',
    },
    'the run got the owner’s credentials, and the pipe they came through is closed',
  );

  // Access turned off: none.
  t.equal((await grant(false)).statusCode, 200);
  t.equal((await execute(f, owner, id)).statusCode, 202);
  t.equal((await waitFor(f, id)).status, 'completed');
  t.same(seen(await logsOf(f, id)), NONE, 'without ibkr_access: none');

  // Another user, access on, no link: none.
  const other = await signUp(app);
  const otherId = await upload(f, other, 'creds.py', SCRIPT);
  await app.inject({
    method: 'PATCH',
    url: `/api/v1/scripts/${otherId}`,
    headers: other.headers,
    payload: { ibkr_access: true },
  });
  t.equal((await execute(f, other, otherId)).statusCode, 202);
  t.equal((await waitFor(f, otherId)).status, 'completed');
  t.same(seen(await logsOf(f, otherId)), NONE, 'no link: none');

  // Nothing of the secrets in the executor's logs (no run failed here: errors are checked below).
  const logs = text();
  t.ok(logs.includes('run starting'), 'the executor did log the runs');
  for (const secret of [ACCESS, REFRESH]) t.notOk(logs.includes(secret), 'the token is not in the logs');
});

t.test(
  'a stored token the executor cannot decrypt: the run goes without it, and it shows nowhere',
  async (t) => {
    const f = await executorFixture(t);
    const { app, database } = f;
    const owner = await signUp(app);
    const ibkrUserId = `U${process.pid}78`;
    const link = async () => t.equal((await linkIbkr(app, owner, ibkrUserId)).statusCode, 200);
    const stored = async () => {
      const [row] = await database.sql<{ access: string; refresh: string }[]>`
      select ibkr_access_token as access, ibkr_refresh_token as refresh from users where id = ${owner.user.id}
    `;
      return row!;
    };
    const id = await upload(f, owner, 'needs-access.py', NEEDS_ACCESS);
    t.equal((await setIbkrAccess(app, owner, id, true)).statusCode, 200);
    const { log, lines, text } = captureLogger('trace');
    await f.startExecutor({}, { log });
    const warnings = () =>
      lines
        .filter((l) => l.msg === 'an IBKR token could not be decrypted; the run goes without it')
        .map((l) => ({ level: l.level, user_id: l.user_id, field: l.field }));
    const ciphertexts: string[] = [];

    // The access token encrypted under a key this executor's keyring does not hold (one
    // retired before rotate-ibkr-key ran); the refresh token still decrypts.
    await link();
    const retired = new SecretBox([{ kid: 'retired', key: Buffer.alloc(32, 7).toString('base64') }]);
    const foreign = retired.encrypt(ACCESS, ibkrContext(owner.user.id, 'access'));
    await database.sql`update users set ibkr_access_token = ${foreign} where id = ${owner.user.id}`;
    ciphertexts.push(foreign, (await stored()).refresh);
    t.equal((await execute(f, owner, id)).statusCode, 202);
    const failed = await waitFor(f, id);
    t.equal(failed.status, 'failed', 'the script, without its access token, gave up');
    t.equal(failed.error_message, 'exited with code 1: no IBKR access token; giving up');
    t.same(
      seen(await logsOf(f, id)),
      {
        IBKR_USER_ID: sha(ibkrUserId),
        IBKR_ACCESS_TOKEN: 'unset',
        IBKR_REFRESH_TOKEN: sha(REFRESH),
        IBKR_TOKEN_EXPIRES_AT: sha(EXPIRES),
        fd3: 'closed',
      },
      'every variable but the one that did not decrypt',
    );
    t.same(warnings(), [{ level: 40, user_id: owner.user.id, field: 'IBKR_ACCESS_TOKEN' }]);
    const notice = (name: string) =>
      `[dollarclub] ${name} is not set: the stored token could not be decrypted; link the IBKR account again\n`;
    t.ok((await logsOf(f, id)).startsWith(notice('IBKR_ACCESS_TOKEN')), 'the owner reads why in the output');

    // Linked again, then the refresh token's ciphertext corrupted (one byte flipped): the
    // authentication tag fails; the access token still decrypts.
    await link();
    const { refresh } = await stored();
    const [version, kid, body] = refresh.split(':');
    const bytes = Buffer.from(body!, 'base64url');
    bytes[bytes.length - 1]! ^= 1;
    const corrupted = `${version}:${kid}:${bytes.toString('base64url')}`;
    await database.sql`update users set ibkr_refresh_token = ${corrupted} where id = ${owner.user.id}`;
    ciphertexts.push(corrupted, (await stored()).access);
    t.equal((await execute(f, owner, id)).statusCode, 202);
    const done = await waitFor(f, id);
    t.equal(done.status, 'completed');
    t.equal(done.error_message, null);
    t.same(seen(await logsOf(f, id)), {
      IBKR_USER_ID: sha(ibkrUserId),
      IBKR_ACCESS_TOKEN: sha(ACCESS),
      IBKR_REFRESH_TOKEN: 'unset',
      IBKR_TOKEN_EXPIRES_AT: sha(EXPIRES),
      fd3: 'closed',
    });
    t.same(warnings(), [
      { level: 40, user_id: owner.user.id, field: 'IBKR_ACCESS_TOKEN' },
      { level: 40, user_id: owner.user.id, field: 'IBKR_REFRESH_TOKEN' },
    ]);
    const output = await logsOf(f, id);
    t.ok(output.startsWith(notice('IBKR_REFRESH_TOKEN')), 'and only for the token that did not decrypt');
    t.notMatch(output, /IBKR_ACCESS_TOKEN is not set/);

    // Neither token nor any of their ciphertexts (whole, or the part after the key id) in
    // the executor's log, the runs' output, or their errors.
    const runs = await database.sql<{ id: number; error_message: string | null }[]>`
    select id, error_message from script_runs where script_id = ${id} order by id
  `;
    t.equal(runs.length, 2);
    t.ok(runs[0]!.error_message, 'the failed run has an error to check');
    const places: Array<[string, string]> = [['the executor log', text()]];
    for (const run of runs) {
      places.push([`run ${run.id}'s output`, (await f.repos.output.readLogs(run.id)).logs]);
      places.push([`run ${run.id}'s error`, run.error_message ?? '']);
    }
    const secrets = [ACCESS, REFRESH, ...ciphertexts, ...ciphertexts.map((c) => c.split(':')[2]!)];
    for (const [where, content] of places)
      for (const secret of secrets) t.notOk(content.includes(secret), `${where}: no ${secret.slice(0, 12)}…`);
  },
);

t.test(
  'an IBKR link that cannot be read when the run starts: the run fails at once and says why; the script never starts',
  async (t) => {
    const { f, owner, id } = await ownerWithAccess(t, `U${process.pid}79`);
    const { database } = f;
    // The statement that reads the link fails in PostgreSQL itself: a column it reads is gone.
    await database.sql`alter table users rename column ibkr_refresh_token to ibkr_refresh_token_away`;
    const { log, lines } = captureLogger('trace');
    await f.startExecutor({}, { log });
    t.equal((await execute(f, owner, id)).statusCode, 202);
    const failed = await waitFor(f, id);
    t.equal(failed.status, 'failed', 'failed, not left running until its lease lapses');
    t.equal(
      failed.error_message,
      'the script could not be started: its IBKR link could not be read; try again',
    );
    t.equal(await logsOf(f, id), '', 'the script never ran');
    t.ok(
      lines.some((l) => l.msg === 'could not read the IBKR link of the script' && l.run_id !== undefined),
      'the operator log says why',
    );

    // Readable again: the next run gets its credentials.
    await database.sql`alter table users rename column ibkr_refresh_token_away to ibkr_refresh_token`;
    t.equal((await execute(f, owner, id)).statusCode, 202);
    const done = await waitFor(f, id);
    t.equal(done.status, 'completed');
    t.equal(seen(await logsOf(f, id)).IBKR_REFRESH_TOKEN, sha(REFRESH));
  },
);

t.test('a run cancelled while its IBKR link is being read never starts', async (t) => {
  const { f, owner, id } = await ownerWithAccess(t, `U${process.pid}80`);
  const { app, database } = f;
  const queued = await execute(f, owner, id);
  t.equal(queued.statusCode, 202);
  const runId = (queued.json() as { id: number }).id;

  // The read of the link waits on a lock of `users` (well within the statement timeout).
  const locker = await database.sql.reserve();
  t.teardown(() => locker.release());
  await locker`begin`;
  await locker`lock table users in access exclusive mode`;
  const { log, lines } = captureLogger('trace');
  const executor = await f.startExecutor({}, { log });
  await eventually('the executor waiting for the link', async () => {
    const [row] = await database.sql<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity
      where wait_event_type = 'Lock' and query like '%ibkr_refresh_token%' and pid <> pg_backend_pid()
    `;
    return row!.n > 0;
  });

  const cancel = await app.inject({
    method: 'POST',
    url: `/api/v1/runs/${runId}/cancel`,
    headers: owner.headers,
  });
  t.equal(cancel.statusCode, 200, 'the cancel is answered while the read waits');
  await eventually('the executor hearing it', () =>
    lines.some((l) => l.msg === 'killing a run' && l.run_id === runId && l.reason === 'cancelled'),
  );
  await locker`rollback`;
  await eventually('the run let go', () => executor.active.length === 0);

  const run = (await app.inject({ url: `/api/v1/runs/${runId}`, headers: owner.headers })).json();
  t.match(run, { status: 'cancelled', exit_code: null }, 'cancelled, with no exit code');
  t.notOk(
    lines.some((l) => l.msg === 'run starting' && l.run_id === runId),
    'the script was never started',
  );
});
