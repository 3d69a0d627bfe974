/** PATCH /scripts/{id} {ibkr_access}: off by default, the owner's to turn on, 404 for others. */
import t from 'tap';
import { multipartFile, signUp, signUpAdmin, testApp } from '../helpers/app.ts';

t.test('ibkr_access', async (t) => {
  const f = await testApp(t);
  const { app } = f;
  const owner = await signUp(app);
  const stranger = await signUp(app);
  const admin = await signUpAdmin(f);
  const body = multipartFile('strategy.py', 'print(1)\n');
  const uploaded = await app.inject({
    method: 'POST',
    url: '/api/v1/scripts',
    headers: { ...owner.headers, ...body.headers },
    payload: body.payload,
  });
  t.equal(uploaded.statusCode, 201);
  const script = uploaded.json();
  t.equal(script.ibkr_access, false, 'off by default');
  const url = `/api/v1/scripts/${script.id}`;
  const patch = (headers: Record<string, string>, payload: unknown) =>
    app.inject({ method: 'PATCH', url, headers, payload: payload as object });

  await t.test('the owner turns it on and off; GET and lists show it', async (t) => {
    const on = await patch(owner.headers, { ibkr_access: true });
    t.equal(on.statusCode, 200);
    t.match(on.json(), { id: script.id, ibkr_access: true, status: 'uploaded' });
    t.equal((await app.inject({ url, headers: owner.headers })).json().ibkr_access, true);
    const list = await app.inject({ url: '/api/v1/scripts', headers: owner.headers });
    t.equal(list.json().scripts[0].ibkr_access, true);
    const same = await patch(owner.headers, {});
    t.equal(same.statusCode, 200, 'an empty patch changes nothing');
    t.equal(same.json().ibkr_access, true);
    const off = await patch(owner.headers, { ibkr_access: false });
    t.equal(off.json().ibkr_access, false);
  });

  await t.test("someone else's script is a 404; an admin may turn it off, not on", async (t) => {
    const res = await patch(stranger.headers, { ibkr_access: true });
    t.equal(res.statusCode, 404);
    t.equal((await app.inject({ url, headers: owner.headers })).json().ibkr_access, false);
    const grant = await patch(admin.headers, { ibkr_access: true });
    t.equal(grant.statusCode, 403);
    t.equal(grant.json().code, 'FORBIDDEN');
    await patch(owner.headers, { ibkr_access: true });
    const revoke = await patch(admin.headers, { ibkr_access: false });
    t.equal(revoke.statusCode, 200);
    t.equal(revoke.json().ibkr_access, false);
  });

  await t.test('bad bodies are 400; nothing else of a script can be patched', async (t) => {
    for (const payload of [
      { ibkr_access: 'yes' },
      { ibkr_access: 1 },
      { status: 'completed' },
      { user_id: 1 },
    ]) {
      const res = await patch(owner.headers, payload);
      t.equal(res.statusCode, 400, JSON.stringify(payload));
      t.equal(res.json().code, 'VALIDATION_FAILED');
    }
    t.equal((await patch({}, { ibkr_access: true })).statusCode, 401);
    const missing = await app.inject({
      method: 'PATCH',
      url: '/api/v1/scripts/999999999',
      headers: owner.headers,
      payload: { ibkr_access: true },
    });
    t.equal(missing.statusCode, 404);
  });
});
