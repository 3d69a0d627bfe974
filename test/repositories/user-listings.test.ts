/** Reads of many users (UserListingRepository, `repos.userListings`): pages, cursors, search, a user with its scripts. */
import t from 'tap';
import { ValidationError } from '../../src/domain/errors.ts';
import { testDatabase } from '../helpers/db.ts';
import { FAKE_HASH, makeScript, makeUser } from '../helpers/fixtures.ts';

t.test('listPage: newest first, filters, totals and page counts in one query', async (t) => {
  const { repos } = await testDatabase(t);
  const users = [];
  for (let i = 0; i < 7; i++) users.push(await makeUser(repos));
  await repos.users.deactivate(users[1]!.id);
  await repos.ibkr.link(users[2]!.id, {
    ibkr_user_id: 'U1',
    access_token_encrypted: null,
    refresh_token_encrypted: null,
    token_expires_at: null,
  });
  await repos.users.touchLogin(users[2]!.id, FAKE_HASH);
  const google = await makeUser(repos, { auth_provider: 'google', google_id: 'g1', hashed_password: null });

  const first = await repos.userListings.listPage({}, { page: 1, per_page: 3 });
  t.same(
    first.items.map((u) => u.id),
    [google.id, users[6]!.id, users[5]!.id],
  );
  t.match(first, { total: 8, page: 1, per_page: 3, pages: 3 });
  const last = await repos.userListings.listPage({}, { page: 3, per_page: 3 });
  t.same(
    last.items.map((u) => u.id),
    [users[1]!.id, users[0]!.id],
  );
  const beyond = await repos.userListings.listPage({}, { page: 9, per_page: 3 });
  t.same(
    beyond,
    { items: [], total: 8, page: 9, per_page: 3, pages: 3 },
    'past the end: empty, total still known',
  );

  t.equal((await repos.userListings.listPage({ is_active: false }, { page: 1, per_page: 20 })).total, 1);
  t.equal(
    (await repos.userListings.listPage({ auth_provider: 'google' }, { page: 1, per_page: 20 })).items[0]?.id,
    google.id,
  );
  const ibkr = await repos.userListings.listPage(
    { ibkr_connected: true, last_login_since: new Date(Date.now() - 7 * 86400_000) },
    { page: 1, per_page: 20 },
  );
  t.same(
    ibkr.items.map((u) => u.id),
    [users[2]!.id],
  );
  t.equal(
    (
      await repos.userListings.listPage(
        { created_since: new Date(Date.now() + 60_000) },
        { page: 1, per_page: 5 },
      )
    ).total,
    0,
  );
  const empty = await repos.userListings.listPage(
    { created_since: new Date(Date.now() + 60_000) },
    { page: 1, per_page: 5 },
  );
  t.same(empty, { items: [], total: 0, page: 1, per_page: 5, pages: 0 });
});

t.test('listAfter walks every user exactly once, in the offset order', async (t) => {
  const { repos } = await testDatabase(t);
  for (let i = 0; i < 11; i++) await makeUser(repos);
  const seen: number[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const page = await repos.userListings.listAfter({}, cursor, 4);
    seen.push(...page.items.map((u) => u.id));
    cursor = page.next_cursor;
    pages++;
  } while (cursor !== null);
  t.equal(pages, 3);
  const offset = await repos.userListings.listPage({}, { page: 1, per_page: 100 });
  t.same(
    seen,
    offset.items.map((u) => u.id),
  );
  const exact = await repos.userListings.listAfter({}, null, 11);
  t.equal(exact.next_cursor, null, 'no next cursor when the last page is exactly full');
});

t.test('a tampered cursor is INVALID_CURSOR', async (t) => {
  const { repos } = await testDatabase(t);
  for (const cursor of [
    '!!!',
    Buffer.from('{"a":1}').toString('base64url'),
    Buffer.from('[-5]').toString('base64url'),
    '',
    // '[1234]' is 'WzEyMzRd' (8 characters): one more decodes to the same bytes, but is not ours.
    `${Buffer.from('[1234]').toString('base64url')}x`,
  ]) {
    await t.rejects(repos.userListings.listAfter({}, cursor, 5), {
      constructor: ValidationError,
      code: 'INVALID_CURSOR',
    });
  }
});

t.test(
  'search matches a case-insensitive substring of email or username; wildcards are literal',
  async (t) => {
    const { repos } = await testDatabase(t);
    const a = await makeUser(repos, { email: 'trader.joe@example.com', username: 'joe' });
    const b = await makeUser(repos, { email: 'x@example.com', username: 'SuperTrader' });
    await makeUser(repos, { email: 'other@example.com', username: 'someone' });
    const pct = await makeUser(repos, { email: 'percent@example.com', username: 'a_b' });
    t.same(
      (await repos.userListings.search('TRADER', 20)).map((u) => u.id),
      [a.id, b.id],
    );
    t.same(
      (await repos.userListings.search('trader', 1)).map((u) => u.id),
      [a.id],
      'limit holds',
    );
    t.same(
      (await repos.userListings.search('a_b', 20)).map((u) => u.id),
      [pct.id],
      '_ is not a wildcard',
    );
    t.same(await repos.userListings.search('%', 20), []);
  },
);

t.test('IBKR-connected users active since a time', async (t) => {
  const { repos, db } = await testDatabase(t);
  const link = (id: string) => ({
    ibkr_user_id: id,
    access_token_encrypted: null,
    refresh_token_encrypted: null,
    token_expires_at: null,
  });
  const active = await makeUser(repos);
  const stale = await makeUser(repos);
  const unlinked = await makeUser(repos);
  await repos.ibkr.link(active.id, link('U-active'));
  await repos.ibkr.link(stale.id, link('U-stale'));
  for (const u of [active, stale, unlinked]) await repos.users.touchLogin(u.id, FAKE_HASH);
  const sql = db.sql;
  await db.many(
    'test.age',
    sql`update users set last_login_at = now() - interval '30 days' where id = ${stale.id}`,
  );
  const found = await repos.userListings.listIbkrConnectedActiveSince(
    new Date(Date.now() - 7 * 86400_000),
    10,
  );
  t.same(
    found.map((u) => u.id),
    [active.id],
  );
});

t.test('findWithScripts returns the user with its newest scripts in one query', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const none = await repos.userListings.findWithScripts(user.id, 100);
  t.same(none, { ...user, scripts: [], scripts_cursor: null });
  const s1 = await makeScript(repos, user.id);
  const s2 = await makeScript(repos, user.id);
  const other = await makeUser(repos);
  await makeScript(repos, other.id);
  const found = await repos.userListings.findWithScripts(user.id, 100);
  t.same(found?.scripts, [s2, s1], 'newest first, typed like every other row (Dates, numbers)');
  t.equal(found?.scripts_cursor, null, 'all of them: no cursor');
  t.equal(await repos.userListings.findWithScripts(user.id + 1000, 100), null);

  const s3 = await makeScript(repos, user.id);
  const capped = await repos.userListings.findWithScripts(user.id, 2);
  t.same(capped?.scripts, [s3, s2], 'only the newest `limit`');
  t.type(capped?.scripts_cursor, 'string');
  const rest = await repos.scriptListings.listAfter(
    { user_id: user.id },
    '-created_at',
    capped!.scripts_cursor,
    2,
  );
  t.same(rest, { items: [s1], next_cursor: null }, 'the cursor continues the list of GET /scripts');
});
