/** `GET /users/{id}?include=scripts` is bounded (issue 7, item 6). */
import t from 'tap';
import { signUp, testApp } from '../helpers/app.ts';
import { makeScript } from '../helpers/fixtures.ts';

const USERS = '/api/v1/users';

const ids = (items: Array<{ id: number }>) => items.map((i) => i.id);

t.test('GET /users/:id?include=scripts embeds the newest 100 and links to the rest', async (t) => {
  const test = await testApp(t);
  const { app } = test;
  const user = await signUp(app);
  const made: number[] = [];
  for (let i = 0; i < 105; i++) made.push((await makeScript(test.repos, user.user.id)).id);
  const newestFirst = [...made].reverse();
  const res = await app.inject({ url: `${USERS}/${user.user.id}?include=scripts`, headers: user.headers });
  t.equal(res.statusCode, 200);
  const body = res.json();
  t.same(ids(body.scripts), newestFirst.slice(0, 100), 'the newest 100, newest first');
  t.match(body.scripts_next, new RegExp(`^/api/v1/scripts\\?user_id=${user.user.id}&per_page=100&cursor=`));
  const rest = await app.inject({ url: body.scripts_next, headers: user.headers });
  t.equal(rest.statusCode, 200, 'the link works for the user itself');
  t.same(ids(rest.json().scripts), newestFirst.slice(100), 'and lists the rest');
  t.equal(rest.json().next_cursor, null);

  const plain = await app.inject({ url: `${USERS}/${user.user.id}`, headers: user.headers });
  t.notOk('scripts_next' in plain.json(), 'no link without include=scripts');
  const few = await signUp(app);
  await makeScript(test.repos, few.user.id);
  const all = await app.inject({ url: `${USERS}/${few.user.id}?include=scripts`, headers: few.headers });
  t.equal(all.json().scripts.length, 1);
  t.equal(all.json().scripts_next, null, 'null when every script is embedded');

  const doc = (await app.inject('/docs/json')).json();
  t.match(doc.paths['/api/v1/users/{id}'].get.description, /newest 100 scripts.*scripts_next/s);
});
