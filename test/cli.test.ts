/**
 * `npm run cli -- create-admin` as a process of its own, against this file's
 * database: the password never comes from the command line, an existing account
 * is promoted only when asked, and a promotion ends every session of that account.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import t from 'tap';
import { verifyPassword } from '../src/services/passwords.ts';
import { signUp, testApp } from './helpers/app.ts';
import { childEnv, entryArgs } from './helpers/entry.ts';

const REPO = path.resolve(import.meta.dirname, '..');

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the CLI with `input` on its standard input (a pipe), or under a pseudo-terminal
 * with `tty`: then each line of `input` is typed only once a prompt asks for it, as a
 * person would (the terminal echoes what is typed before the program turns echo off).
 */
function cli(databaseUrl: string, args: string[], input = '', tty = false): Promise<Ran> {
  const command = tty
    ? // script(1) gives the command a pseudo-terminal and forwards our standard input to it.
      spawn(
        'script',
        ['-qec', [process.execPath, ...entryArgs('src/cli.ts'), ...args].join(' '), '/dev/null'],
        {
          cwd: REPO,
          env: childEnv({ ...process.env, DATABASE_URL: databaseUrl, NODE_ENV: 'test', NODE_OPTIONS: '' }),
        },
      )
    : spawn(process.execPath, [...entryArgs('src/cli.ts'), ...args], {
        cwd: REPO,
        env: childEnv({ ...process.env, DATABASE_URL: databaseUrl, NODE_ENV: 'test', NODE_OPTIONS: '' }),
      });
  let stdout = '';
  let stderr = '';
  const lines = tty ? input.split('\r').slice(0, -1) : [];
  let prompts = 0;
  command.stdout.on('data', (c) => {
    stdout += c;
    const seen = stdout.split(/Password: |Repeat the password: /).length - 1;
    while (prompts < seen && lines.length > 0) {
      prompts++;
      command.stdin.write(`${lines.shift()}\r`);
    }
  });
  command.stderr.on('data', (c) => {
    stderr += c;
  });
  if (tty) command.on('exit', () => command.stdin.end());
  else command.stdin.end(input);
  return new Promise((resolve) => command.on('close', (code) => resolve({ code, stdout, stderr })));
}

t.test('--password is refused with a reason, and nothing is created', async (t) => {
  const test = await testApp(t);
  for (const flag of [['--password', 'hunter2hunter2'], ['--password=hunter2hunter2']]) {
    const ran = await cli(test.database.url, [
      'create-admin',
      '--email',
      'root@example.com',
      '--username',
      'root',
      ...flag,
    ]);
    t.equal(ran.code, 2, flag.join(' '));
    t.match(ran.stderr, /--password is refused: .*shell history.*\/proc\/<pid>\/cmdline.*--password-stdin/s);
    t.notMatch(ran.stderr + ran.stdout, /hunter2/, 'the password is not repeated');
  }
  t.equal(await test.repos.users.findByEmail('root@example.com'), null);
});

t.test('--password-stdin creates an admin with the password from standard input', async (t) => {
  const test = await testApp(t);
  const ran = await cli(
    test.database.url,
    ['create-admin', '--email', 'Root@Example.com', '--username', 'root', '--password-stdin'],
    'a long enough password\n',
  );
  t.equal(ran.code, 0, ran.stderr);
  t.match(ran.stdout, /^created admin root@example\.com \(id \d+\)$/m);
  const login = await test.app.inject({
    method: 'POST',
    url: '/api/v1/auth/login',
    payload: { email: 'root@example.com', password: 'a long enough password' },
  });
  t.equal(login.statusCode, 200, 'the password is exactly the line given, without its newline');
  t.equal(login.json().user.role, 'admin');
});

t.test('without --password-stdin and without a terminal it says what to do', async (t) => {
  const test = await testApp(t);
  const ran = await cli(
    test.database.url,
    ['create-admin', '--email', 'root@example.com', '--username', 'root'],
    'piped but not announced\n',
  );
  t.equal(ran.code, 1);
  t.match(ran.stderr, /standard input is not a terminal.*--password-stdin/);
  t.equal(await test.repos.users.findByEmail('root@example.com'), null);
});

t.test('at a terminal it asks twice and does not echo', async (t) => {
  const test = await testApp(t);
  const ran = await cli(
    test.database.url,
    ['create-admin', '--email', 'tty@example.com', '--username', 'tty_admin'],
    'typed secretly 123\rtyped secretly 123\r',
    true,
  );
  t.equal(ran.code, 0, ran.stdout + ran.stderr);
  t.match(ran.stdout, /Password: /);
  t.match(ran.stdout, /Repeat the password: /);
  t.notMatch(ran.stdout, /typed secretly/, 'the terminal never shows the password');
  const credentials = await test.repos.users.findCredentials('tty@example.com');
  t.ok(await verifyPassword(credentials!.hashed_password, 'typed secretly 123'));
});

t.test('an existing account is not promoted without --promote-existing', async (t) => {
  const test = await testApp(t);
  // Someone registered the email the operator is about to use.
  const stranger = await signUp(test.app, { email: 'ops@example.com' });
  const ran = await cli(
    test.database.url,
    ['create-admin', '--email', 'ops@example.com', '--username', 'ops', '--password-stdin'],
    'the operator password\n',
  );
  t.equal(ran.code, 1);
  t.match(ran.stderr, /exists already; nothing was changed.*--promote-existing/s);
  const me = await test.app.inject({ url: '/api/v1/me', headers: stranger.headers });
  t.equal(me.statusCode, 200);
  t.equal(me.json().role, 'user', 'still a user');
  const login = await test.app.inject({
    method: 'POST',
    url: '/api/v1/auth/login',
    payload: { email: 'ops@example.com', password: stranger.password },
  });
  t.equal(login.statusCode, 200, 'the password is unchanged');
});

t.test('--promote-existing promotes, sets the password and ends every session of the account', async (t) => {
  const test = await testApp(t);
  const stranger = await signUp(test.app, { email: 'ops@example.com' });
  const second = await test.app.inject({
    method: 'POST',
    url: '/api/v1/auth/login',
    payload: { email: 'ops@example.com', password: stranger.password },
  });
  const secondToken = second.json().token as string;
  // Warm the token cache: revocation must reach it too.
  t.equal((await test.app.inject({ url: '/api/v1/me', headers: stranger.headers })).statusCode, 200);
  const ran = await cli(
    test.database.url,
    [
      'create-admin',
      '--email',
      'ops@example.com',
      '--username',
      'ops',
      '--promote-existing',
      '--password-stdin',
    ],
    'the operator password\n',
  );
  t.equal(ran.code, 0, ran.stderr);
  t.match(ran.stdout, /promoted ops@example\.com \(id \d+\) to admin; 2 session\(s\) ended/);
  const [row] = await test.database.sql`
    select role, count(t.id) filter (where t.revoked_at is null)::int as live
    from users u left join api_tokens t on t.user_id = u.id
    where u.email = 'ops@example.com' group by u.role
  `;
  t.same(row, { role: 'admin', live: 0 }, 'admin, and no live token');
  test.cache.evictUser(stranger.user.id); // what the NOTIFY does in a running server
  for (const token of [stranger.token, secondToken]) {
    const me = await test.app.inject({ url: '/api/v1/me', headers: { authorization: `Bearer ${token}` } });
    t.equal(me.statusCode, 401, 'an old session is not an admin session');
  }
  const oldPassword = await test.app.inject({
    method: 'POST',
    url: '/api/v1/auth/login',
    payload: { email: 'ops@example.com', password: stranger.password },
  });
  t.equal(oldPassword.statusCode, 401, "the registrant's password no longer works");
  const login = await test.app.inject({
    method: 'POST',
    url: '/api/v1/auth/login',
    payload: { email: 'ops@example.com', password: 'the operator password' },
  });
  t.equal(login.statusCode, 200);
  t.equal(login.json().user.role, 'admin');
});
