/**
 * Property tests over every API route: thousands of random requests (JSON bodies
 * with hostile keys, raw non-JSON bodies, query strings, path params) as an admin,
 * as a user, with a forged token and with none. Whatever comes in, the answer is
 * never a 5xx (no database outage here, so a 503 is a bug too), and every error
 * answer is an RFC 9457 problem whose `status` is the HTTP status.
 */
import fc from 'fast-check';
import type { InjectOptions } from 'fastify';
import t from 'tap';
import { SCRIPT_STATUSES } from '../../src/domain/enums.ts';
import { SCRIPT_SORTS } from '../../src/domain/script.ts';
import { newToken, tokenHash } from '../../src/services/tokens.ts';
import { type Account, multipartFile, signUp, signUpAdmin, testApp } from '../helpers/app.ts';

const harness = await testApp(t);
const { app } = harness;
const admin = await signUpAdmin(harness);
const user = await signUp(app);
/** Fair game for destructive requests: the admin and the user are never patched or deleted. */
const victim = await signUp(app);
const uploaded: number[] = [];
for (const [account, name] of [
  [user, 'mine.py'],
  [admin, 'admins.js'],
  [victim, 'victims.ts'],
] as const) {
  const file = multipartFile(name, 'print("hello")\n');
  const res = await app.inject({
    method: 'POST',
    url: '/api/v1/scripts',
    headers: { ...account.headers, ...file.headers },
    payload: file.payload,
  });
  if (res.statusCode !== 201) throw new Error(`upload failed: ${res.statusCode} ${res.body}`);
  uploaded.push(res.json<{ id: number }>().id);
}
// A schedule on each script, for the schedule routes (fair game: nothing depends on them).
const scheduled: number[] = [];
for (const [i, account] of [user, admin, victim].entries()) {
  const res = await app.inject({
    method: 'POST',
    url: `/api/v1/scripts/${uploaded[i]}/schedules`,
    headers: account.headers,
    payload: { cron: '30 9 * * 1-5', timezone: 'America/New_York' },
  });
  if (res.statusCode !== 201) throw new Error(`schedule failed: ${res.statusCode} ${res.body}`);
  scheduled.push(res.json<{ id: number }>().id);
}
const protectedUserIds = new Set([admin.user.id, user.user.id]);
const protectedScriptIds = new Set(uploaded.slice(0, 2));

// ---------------------------------------------------------------------------
// Values

/** Strings that have broken parsers, casts, LIKE patterns and date handling before. */
const NASTY_STRINGS = [
  '',
  ' ',
  '\u0000',
  'a\u0000b',
  '%',
  '%%',
  '_',
  '\\',
  'x\\',
  "'; drop table users; --",
  '"',
  '{}',
  '[]',
  'null',
  'true',
  'false',
  'NaN',
  'Infinity',
  '-Infinity',
  '-1',
  '0',
  '-0',
  '1.5',
  '1e3',
  '1e400',
  '-1e400',
  '9007199254740991',
  '9007199254740993',
  '99999999999999999999999999',
  '0x10',
  '١٢٣',
  '\ud83d\ude00',
  '\ud800',
  'é'.normalize('NFD'),
  'İ',
  'ß',
  '<script>alert(1)</script>',
  '../../../etc/passwd',
  'a'.repeat(101),
  'a'.repeat(10_000),
  '2026-01-01T00:00:00Z',
  '2016-12-31T23:59:60Z',
  '2026-02-30T00:00:00Z',
  '0000-01-01T00:00:00Z',
  '9999-12-31T23:59:59.999999999Z',
  '1969-12-31T23:59:59-23:59',
  'person@example.com',
  ' PERSON@EXAMPLE.COM ',
  'a@b',
  '@',
  'dc_',
  `dc_${'A'.repeat(43)}`,
  'uploaded',
  'completed',
  'created_at',
  '-execution_time_seconds',
  'email',
  'google',
  'admin',
  'user',
  'scripts',
  'eyJ4IjoxfQ',
  'W10',
  'WzEsMiwzXQ',
  'WyIyMDI2LTAxLTAxVDAwOjAwOjAwWiIsMV0',
  'WyJub3QgYSBkYXRlIiwtMV0',
  'WzEuNSwiMjAyNi0wMS0wMVQwMDowMDowMFoiLDFd',
  'WzEwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDBd',
];

const nastyString = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...NASTY_STRINGS) },
  { weight: 2, arbitrary: fc.string({ unit: 'grapheme', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 20 }) },
  { weight: 1, arbitrary: fc.string({ maxLength: 300 }) },
);

const nastyNumber = fc.oneof(
  fc.integer(),
  fc.constantFrom(0, -1, 1, 2 ** 31, 2 ** 53, -(2 ** 53), 1e308, -1e308, 5e-324, 0.5),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
);

const pad = (n: number, width: number) => String(n).padStart(width, '0');

/** Timestamps, mostly ISO 8601 shaped with fields out of range (month 13, hour 24, second 60, ...). */
const dateTimes = fc.oneof(
  {
    weight: 3,
    arbitrary: fc
      .tuple(
        fc.integer({ min: 0, max: 9999 }),
        fc.integer({ min: 0, max: 13 }),
        fc.integer({ min: 0, max: 32 }),
        fc.integer({ min: 0, max: 24 }),
        fc.integer({ min: 0, max: 60 }),
        fc.integer({ min: 0, max: 61 }),
        fc.constantFrom('', '.5', '.999999999', '.1234567890123'),
        fc.constantFrom('Z', 'z', '+00:00', '-01:00', '+23:59', '+24:00', '-00:60', ''),
      )
      .map(([y, mo, d, h, mi, sec, frac, tz]) => {
        return `${pad(y, 4)}-${pad(mo, 2)}-${pad(d, 2)}T${pad(h, 2)}:${pad(mi, 2)}:${pad(sec, 2)}${frac}${tz}`;
      }),
  },
  { weight: 1, arbitrary: fc.date({ noInvalidDate: true }).map((d) => d.toISOString()) },
  // A leap second: valid RFC 3339, but no JS Date can hold it.
  {
    weight: 1,
    arbitrary: fc
      .date({ min: new Date('1970-01-01'), max: new Date('2100-01-01'), noInvalidDate: true })
      .map((d) => `${d.toISOString().slice(0, 10)}T23:59:60Z`),
  },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      '2016-12-31T23:59:60Z',
      '2016-12-31T22:59:60-01:00',
      '1990-12-31T15:59:60-08:00',
      '0000-01-01T00:00:00Z',
      '9999-12-31T23:59:59.999999999Z',
      '2026-01-01',
      '2026-01-01T00:00:00',
      '2026-01-01 00:00:00Z',
      'now',
      'infinity',
      '-infinity',
      'epoch',
      '',
    ),
  },
);

/** Numbers as a query string spells them. */
const numerals = fc.oneof(
  fc.integer().map(String),
  fc.integer({ min: -2, max: 120 }).map(String),
  fc.double().map(String),
  fc.constantFrom(
    '0',
    '-1',
    '1.5',
    '1e3',
    '1e400',
    '-0',
    'NaN',
    'Infinity',
    '0x10',
    '9007199254740993',
    '+5',
    ' 5',
    '',
  ),
);
const booleanish = fc.constantFrom('true', 'false', '1', '0', 'yes', 'TRUE', 'null', '', 'true,false');
const words = (...known: string[]) =>
  fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...known) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(...known.map((w) => w.toUpperCase()), ...known.map((w) => ` ${w}`)),
    },
    { weight: 1, arbitrary: nastyString },
  );
const base64url = (text: string) => Buffer.from(text).toString('base64url');
/** Cursors: empty, garbage, and well-encoded JSON whose content the server never issued. */
const cursors = fc.oneof(
  fc.constant(''),
  fc
    .tuple(
      fc.constantFrom(...SCRIPT_SORTS, 'id', ''),
      fc.oneof(dateTimes, nastyString, nastyNumber),
      fc.oneof(nastyNumber, fc.integer({ min: 1, max: 10 })),
    )
    .map((key) => base64url(JSON.stringify(key))),
  fc.oneof(nastyNumber, fc.integer({ min: 1, max: 10 })).map((id) => base64url(JSON.stringify([id]))),
  fc.string({ maxLength: 100 }).map(base64url),
  nastyString,
);

/** Values for the query keys the routes know, as their schemas might misread them. */
const QUERY_VALUES: Record<string, fc.Arbitrary<string>> = {
  page: numerals,
  per_page: numerals,
  limit: numerals,
  days: numerals,
  user_id: numerals,
  min_execution_time: numerals,
  cursor: cursors,
  created_since: dateTimes,
  last_login_since: dateTimes,
  is_active: booleanish,
  ibkr_connected: booleanish,
  all: booleanish,
  status: words(...SCRIPT_STATUSES),
  sort: words(...SCRIPT_SORTS),
  auth_provider: words('email', 'google'),
  include: words('scripts'),
  q: nastyString,
  tail: numerals,
  follow: booleanish,
};

/** Keys that try mass assignment, prototype pollution, or are simply unknown. */
const KEYS = [
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'hasOwnProperty',
  'id',
  'role',
  'is_active',
  'is_verified',
  'hashed_password',
  'user_id',
  'file_path',
  'status',
  'email',
  'username',
  'password',
  'current_password',
  'new_password',
  'ibkr_user_id',
  'access_token',
  'refresh_token',
  'token_expires_at',
  'file',
  '',
];
const key = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...KEYS) },
  { weight: 1, arbitrary: fc.string() },
);

const jsonLeaf = fc.oneof(nastyString, nastyNumber, fc.boolean(), fc.constant(null));
const { json: jsonish } = fc.letrec<{ json: unknown }>((tie) => ({
  json: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    jsonLeaf,
    fc.array(tie('json'), { maxLength: 4 }),
    fc.array(fc.tuple(key, tie('json')), { maxLength: 5 }).map((entries) => new RawObject(entries)),
  ),
}));

/** An object written out by hand, so `__proto__` and repeated keys reach the server as sent. */
class RawObject {
  readonly entries: Array<[string, unknown]>;
  constructor(entries: Array<[string, unknown]>) {
    this.entries = entries;
  }
}

function serialize(value: unknown): string {
  if (value instanceof RawObject)
    return `{${value.entries.map(([k, v]) => `${JSON.stringify(k)}:${serialize(v)}`).join(',')}}`;
  if (Array.isArray(value)) return `[${value.map(serialize).join(',')}]`;
  return JSON.stringify(value) ?? 'null';
}

/** Values for the body fields the routes know: near misses of valid input, and anything. */
function bodyValues(): Record<string, fc.Arbitrary<unknown>> {
  const emails = fc.oneof(
    fc.emailAddress(),
    fc.constantFrom(admin.user.email, ` ${admin.user.email.toUpperCase()} `, victim.user.email),
    nastyString,
  );
  const usernames = fc.oneof(fc.stringMatching(/^[A-Za-z0-9_-]{3,100}$/), nastyString);
  const passwords = fc.oneof(fc.string({ minLength: 8, maxLength: 300 }), nastyString);
  const flags = fc.oneof(fc.boolean(), booleanish, jsonish);
  return {
    email: emails,
    username: usernames,
    password: passwords,
    current_password: passwords,
    new_password: passwords,
    ibkr_user_id: fc.oneof(fc.string({ minLength: 1, maxLength: 100 }), nastyString),
    access_token: passwords,
    refresh_token: passwords,
    token_expires_at: dateTimes,
    is_active: flags,
    is_verified: flags,
    role: words('user', 'admin'),
    cron: fc.oneof(
      fc.constantFrom('30 9 * * 1-5', '0 30 9 * * 1-5', '* * * *', '0 0 31 2 *', '*/0 * * * *', '61 * * * *'),
      fc
        .array(fc.constantFrom('*', '0', '59', '1-5', '*/15', 'MON', 'L', '?', '#', ',', '-', '/'), {
          minLength: 1,
          maxLength: 7,
        })
        .map((fields) => fields.join(' ')),
      nastyString,
    ),
    timezone: fc.oneof(
      fc.constantFrom(
        'America/New_York',
        'UTC',
        'Mars/Base',
        '+05:00',
        'utc',
        'America/New York',
        'Etc/GMT+5',
      ),
      nastyString,
    ),
    enabled: flags,
  };
}

/** A body with exactly the route's fields, each a near miss or anything; sometimes one field too many. */
function shaped(fields: readonly string[]): fc.Arbitrary<RawObject> {
  const typed = bodyValues();
  const value = (field: string) =>
    fc.oneof(
      { weight: 4, arbitrary: typed[field] ?? nastyString },
      { weight: 1, arbitrary: nastyString },
      { weight: 1, arbitrary: jsonish },
    );
  return fc
    .tuple(
      fc.subarray([...fields]),
      fc.tuple(...fields.map(value)),
      fc.option(fc.constantFrom('role', 'is_active', 'hashed_password', 'user_id', 'id', '__proto__'), {
        freq: 4,
      }),
    )
    .map(([chosen, values, extra]) => {
      const entries: Array<[string, unknown]> = chosen.map((f) => [f, values[fields.indexOf(f)]]);
      if (extra !== null)
        entries.push([extra, extra === '__proto__' ? new RawObject([['role', 'admin']]) : 'admin']);
      return new RawObject(entries);
    });
}

const RAW_BODIES = [
  '',
  ' ',
  '{',
  '}',
  '{"a":}',
  "{'a':1}",
  '{"a":1,}',
  'nul',
  'undefined',
  '{"__proto__":{"role":"admin"}}',
  '{"constructor":{"prototype":{"role":"admin"}}}',
  '{"a":1}{"b":2}',
  '\ufeff{}',
  '['.repeat(5000),
  `{"a":"${'x'.repeat(2000)}"}`,
  '{"email":"\\ud800"}',
  '\u0000',
];
const rawBody = fc.oneof(fc.constantFrom(...RAW_BODIES), fc.string({ maxLength: 200 }));

const CONTENT_TYPES = [
  'application/json',
  'application/json; charset=utf-8',
  'application/json; charset=latin1',
  'application/json; charset=utf-16',
  'APPLICATION/JSON',
  'application/problem+json',
  'text/plain',
  'application/x-www-form-urlencoded',
  'multipart/form-data',
  'multipart/form-data; boundary=xyz',
  'application/octet-stream',
  ';',
];

type Body = { payload?: string | Buffer; contentType?: string };

function bodies(fields: readonly string[]): fc.Arbitrary<Body> {
  return fc.oneof(
    {
      weight: 3,
      arbitrary: shaped(fields).map((o) => ({ payload: serialize(o), contentType: 'application/json' })),
    },
    {
      weight: 2,
      arbitrary: jsonish.map((v) => ({ payload: serialize(v), contentType: 'application/json' })),
    },
    { weight: 2, arbitrary: rawBody.map((payload) => ({ payload, contentType: 'application/json' })) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.oneof(rawBody, jsonish.map(serialize)), fc.constantFrom(...CONTENT_TYPES))
        .map(([payload, contentType]) => ({ payload, contentType })),
    },
    { weight: 1, arbitrary: fc.constant({}) },
  );
}

/** Multipart uploads with hostile file names, field names, contents and framing. */
const uploads: fc.Arbitrary<Body> = fc.oneof(
  fc
    .tuple(
      fc.oneof(
        fc.constantFrom(
          'a.py',
          'a.js',
          'a.ts',
          'a.exe',
          '.py',
          'a.PY',
          'a.py.exe',
          '../../x.py',
          '/etc/passwd.py',
          'C:\\x\\y.js',
          'ü ñ 🙂.py',
          'a\u0000.py',
          '',
          `${'a'.repeat(300)}.py`,
        ),
        nastyString.map((s) => `${s}.py`),
      ),
      fc.oneof(fc.constant('file'), fc.constant('other'), fc.string({ maxLength: 10 })),
      fc.oneof(fc.constant(''), fc.constant('print(1)\n'), fc.string({ maxLength: 100 })),
    )
    .map(([filename, field, content]) => {
      const { payload, headers } = multipartFile(filename, content, field);
      return { payload, contentType: headers['content-type'] };
    }),
  fc
    .tuple(
      rawBody,
      fc.constantFrom('multipart/form-data; boundary=xyz', 'multipart/form-data', 'multipart/mixed'),
    )
    .map(([payload, contentType]) => ({ payload, contentType })),
);

// ---------------------------------------------------------------------------
// URLs

/** Percent-encoding of any string (a lone surrogate becomes U+FFFD, as a client's UTF-8 encoder makes it). */
const encode = (s: string) => encodeURIComponent(Buffer.from(s, 'utf8').toString('utf8'));

const PATH_IDS = [
  '0',
  '-1',
  '1.5',
  '1e3',
  '+1',
  ' 1',
  '0x1',
  '00001',
  '9007199254740991',
  '9007199254740992',
  '99999999999999999999999',
  '1e400',
  'NaN',
  'Infinity',
  'null',
  'true',
  '%00',
  '%',
  '%zz',
  '%E0%A4%A',
  '%ED%A0%80',
  '%FF',
  '%2e%2e',
  '..',
  'search',
  'recent',
  'running',
  'me',
  encodeURIComponent('١'),
  encodeURIComponent('🙂'),
  encodeURIComponent('1;select 1'),
];

function pathIds(kind: 'user' | 'script' | 'schedule' | 'run'): fc.Arbitrary<string> {
  const known =
    kind === 'user'
      ? [admin.user.id, user.user.id, victim.user.id]
      : kind === 'script' || kind === 'run'
        ? uploaded
        : scheduled;
  return fc.oneof(
    { weight: 2, arbitrary: fc.constantFrom(...PATH_IDS) },
    { weight: 2, arbitrary: fc.constantFrom(...known).map(String) },
    { weight: 1, arbitrary: fc.integer({ min: -5, max: 1_000_000 }).map(String) },
    { weight: 1, arbitrary: nastyString.map(encode) },
  );
}

/** Values as a query string carries them: percent-encoded, or raw hostile fragments. */
const queryValue = fc.oneof(
  { weight: 4, arbitrary: nastyString.map(encode) },
  { weight: 1, arbitrary: nastyNumber.map((n) => encode(String(n))) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '',
      '%',
      '%zz',
      '%00',
      '%ED%A0%80',
      '%C0%AF',
      '%FF',
      '+',
      '%2B1',
      'a=b',
      '[]',
      '%5B%5D',
      '1&1',
    ),
  },
);

function queryStrings(keys: readonly string[]): fc.Arbitrary<string> {
  const known = keys.length > 0 ? keys : ['x'];
  const pair = fc.oneof(
    {
      weight: keys.length > 0 ? 6 : 0,
      arbitrary: fc
        .constantFrom(...known)
        .chain((k) =>
          fc
            .oneof(
              { weight: 3, arbitrary: (QUERY_VALUES[k] ?? nastyString).map(encode) },
              { weight: 1, arbitrary: queryValue },
            )
            .map((v) => `${k}=${v}`),
        ),
    },
    {
      weight: 1,
      arbitrary: fc
        .tuple(
          fc.oneof(
            fc.constantFrom('__proto__', 'constructor', 'x[]', 'a[b]', '', '%00', 'page'),
            fc.string({ maxLength: 8 }).map(encode),
          ),
          queryValue,
          fc.boolean(),
        )
        .map(([k, v, bare]) => (bare && v === '' ? k : `${k}=${v}`)),
    },
  );
  return fc.array(pair, { maxLength: 6 }).map((pairs) => (pairs.length === 0 ? '' : `?${pairs.join('&')}`));
}

// ---------------------------------------------------------------------------
// The routes

interface RouteSpec {
  method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';
  path: string;
  /** What `:id` names, when the path has one. */
  id?: 'user' | 'script' | 'schedule' | 'run';
  /** Query keys the route knows. */
  query?: readonly string[];
  /** The body's fields, for routes that take JSON; 'multipart' for the upload. */
  body?: readonly string[] | 'multipart';
  /** Random requests for this route (DEFAULT_RUNS otherwise): fewer where valid input costs an argon2 hash. */
  runs?: number;
  /** Never ask to follow the output (an endless stream without an executor). */
  noFollow?: boolean;
}

const PAGE = ['page', 'per_page', 'cursor'];

const ROUTES: RouteSpec[] = [
  { method: 'POST', path: '/api/v1/auth/register', body: ['email', 'username', 'password'], runs: 120 },
  { method: 'POST', path: '/api/v1/auth/login', body: ['email', 'password'], runs: 120 },
  { method: 'POST', path: '/api/v1/auth/logout', body: [] },
  { method: 'GET', path: '/api/v1/auth/providers' },
  // No GOOGLE_CLIENT_ID here: every request is a 404 problem, never a 5xx.
  { method: 'POST', path: '/api/v1/auth/google', body: ['id_token', 'cookie'] },
  { method: 'GET', path: '/api/v1/me' },
  { method: 'PATCH', path: '/api/v1/me', body: ['username', 'current_password', 'new_password'], runs: 150 },
  {
    method: 'PUT',
    path: '/api/v1/me/ibkr',
    body: ['ibkr_user_id', 'access_token', 'refresh_token', 'token_expires_at'],
  },
  { method: 'DELETE', path: '/api/v1/me/ibkr' },
  {
    method: 'GET',
    path: '/api/v1/users',
    query: [...PAGE, 'auth_provider', 'is_active', 'ibkr_connected', 'last_login_since', 'created_since'],
    runs: 300,
  },
  { method: 'GET', path: '/api/v1/users/search', query: ['q', 'limit'], runs: 200 },
  { method: 'GET', path: '/api/v1/users/:id', id: 'user', query: ['include'] },
  {
    method: 'PATCH',
    path: '/api/v1/users/:id',
    id: 'user',
    body: ['username', 'is_active', 'is_verified', 'role'],
  },
  { method: 'DELETE', path: '/api/v1/users/:id', id: 'user' },
  { method: 'POST', path: '/api/v1/scripts', body: 'multipart' },
  {
    method: 'GET',
    path: '/api/v1/scripts',
    query: [...PAGE, 'status', 'min_execution_time', 'created_since', 'sort', 'user_id', 'all'],
    runs: 300,
  },
  { method: 'GET', path: '/api/v1/scripts/recent', query: ['days', 'limit'] },
  { method: 'GET', path: '/api/v1/scripts/:id', id: 'script' },
  { method: 'GET', path: '/api/v1/scripts/:id/content', id: 'script' },
  { method: 'DELETE', path: '/api/v1/scripts/:id', id: 'script' },
  { method: 'PATCH', path: '/api/v1/scripts/:id', id: 'script', body: ['ibkr_access'] },
  { method: 'GET', path: '/api/v1/scripts/running' },
  { method: 'POST', path: '/api/v1/scripts/:id/execute', id: 'script' },
  { method: 'POST', path: '/api/v1/scripts/:id/cancel', id: 'script' },
  { method: 'GET', path: '/api/v1/scripts/:id/runs', id: 'script', query: ['per_page', 'cursor'] },
  {
    method: 'GET',
    path: '/api/v1/runs',
    query: ['per_page', 'cursor', 'script_id', 'status', 'trigger', 'since', 'user_id', 'all'],
  },
  { method: 'GET', path: '/api/v1/runs/:id', id: 'run' },
  { method: 'POST', path: '/api/v1/runs/:id/cancel', id: 'run' },
  // A queued run never ends here (no executor): following it is tested elsewhere.
  { method: 'GET', path: '/api/v1/runs/:id/logs', id: 'run', query: ['tail', 'follow'], noFollow: true },
  // `follow=true` streams until the run ends, and nothing runs scripts here: it is tested elsewhere.
  {
    method: 'GET',
    path: '/api/v1/scripts/:id/logs',
    id: 'script',
    query: ['tail', 'follow'],
    noFollow: true,
  },
  {
    method: 'POST',
    path: '/api/v1/scripts/:id/schedules',
    id: 'script',
    body: ['cron', 'timezone', 'enabled'],
  },
  { method: 'GET', path: '/api/v1/scripts/:id/schedules', id: 'script' },
  { method: 'GET', path: '/api/v1/schedules', query: ['per_page', 'cursor', 'all'] },
  { method: 'GET', path: '/api/v1/schedules/:id', id: 'schedule' },
  { method: 'PATCH', path: '/api/v1/schedules/:id', id: 'schedule', body: ['cron', 'timezone', 'enabled'] },
  { method: 'DELETE', path: '/api/v1/schedules/:id', id: 'schedule' },
  { method: 'GET', path: '/api/v1/stats/scripts', runs: 40 },
  { method: 'GET', path: '/api/v1/stats/scripts/by-status', runs: 40 },
  { method: 'GET', path: '/api/v1/stats/scripts/performance', runs: 40 },
  { method: 'GET', path: '/api/v1/stats/users', runs: 40 },
  { method: 'GET', path: '/api/v1/stats/users/by-provider', runs: 40 },
  { method: 'GET', path: '/api/v1/stats/users/top', query: ['limit'] },
  { method: 'GET', path: '/api/v1/stats/users/script-counts', query: ['page', 'per_page'] },
  { method: 'GET', path: '/health', runs: 30 },
  { method: 'GET', path: '/health/database', runs: 30 },
];

const DEFAULT_RUNS = 110;

type Caller = 'admin' | 'user' | 'forged' | 'malformed' | 'none';
const callers = fc.constantFrom<Caller>('admin', 'user', 'admin', 'user', 'forged', 'malformed', 'none');

interface Request {
  caller: Caller;
  url: string;
  body: Body;
}

function requests(route: RouteSpec): fc.Arbitrary<Request> {
  const path =
    route.id === undefined
      ? fc.constant(route.path)
      : pathIds(route.id).map((id) => route.path.replace(':id', id));
  const body: fc.Arbitrary<Body> =
    route.body === undefined
      ? fc.oneof({ weight: 4, arbitrary: fc.constant({}) }, { weight: 1, arbitrary: bodies([]) })
      : route.body === 'multipart'
        ? fc.oneof(uploads, bodies(['file']))
        : bodies(route.body);
  return fc
    .record({ caller: callers, path, query: queryStrings(route.query ?? []), body })
    .map(({ caller, path, query, body }) => ({
      caller,
      url: path + (route.noFollow ? withoutFollow(query) : query),
      body,
    }));
}

/** The query string with every `follow` that the server would read as true turned false. */
function withoutFollow(query: string): string {
  if (query === '') return query;
  const decode = (part: string) => {
    try {
      return decodeURIComponent(part.replaceAll('+', ' '));
    } catch {
      return part;
    }
  };
  const pairs = query
    .slice(1)
    .split('&')
    .map((pair) => {
      const [k = '', ...rest] = pair.split('=');
      return decode(k) === 'follow' && decode(rest.join('=')).trim().toLowerCase() !== 'false'
        ? `${k}=false`
        : pair;
    });
  return `?${pairs.join('&')}`;
}

/** The account's own token, or for logout a fresh one (logging out must not end the fuzz session). */
async function authorization(caller: Caller, route: RouteSpec): Promise<string | undefined> {
  const account: Account | undefined = caller === 'admin' ? admin : caller === 'user' ? user : undefined;
  if (account !== undefined) {
    if (route.path !== '/api/v1/auth/logout') return account.headers.authorization;
    const token = newToken();
    await harness.repos.tokens.create(account.user.id, tokenHash(token)!, new Date(Date.now() + 3_600_000));
    return `Bearer ${token}`;
  }
  if (caller === 'forged') return `Bearer ${newToken()}`;
  if (caller === 'malformed') return 'Bearer';
  return undefined;
}

/**
 * On destructive routes, an id that the server would read as one of the fuzz's own
 * accounts or their scripts (`1`, ` 1`, `0x1`, `1e0`, ... all coerce to 1) is swapped
 * for a missing one, so the fuzz keeps its sessions.
 */
function spare(route: RouteSpec, url: string): string {
  if (route.method === 'GET' || route.id === undefined) return url;
  const match = /^(\/api\/v1\/(?:users|scripts)\/)([^/?]*)(.*)$/.exec(url);
  if (match === null) return url;
  let id: number;
  try {
    id = Number(decodeURIComponent(match[2]!));
  } catch {
    return url;
  }
  const guarded = route.id === 'user' ? protectedUserIds : protectedScriptIds;
  return guarded.has(id) ? `${match[1]}${id + 10_000_000}${match[3]}` : url;
}

function describe(route: RouteSpec, request: Request, status: number, body: string): string {
  const payload = request.body.payload === undefined ? '' : String(request.body.payload).slice(0, 500);
  return [
    `${route.method} ${spare(route, request.url)} as ${request.caller}`,
    `content-type: ${request.body.contentType ?? '(none)'}`,
    `body: ${JSON.stringify(payload)}`,
    `→ ${status} ${body.slice(0, 500)}`,
  ].join('\n');
}

const STACK = /\bat .+\.(?:ts|js|mjs):\d+/;

async function send(route: RouteSpec, request: Request) {
  const headers: Record<string, string> = {};
  const auth = await authorization(request.caller, route);
  if (auth !== undefined) headers.authorization = auth;
  if (request.body.contentType !== undefined) headers['content-type'] = request.body.contentType;
  const options: InjectOptions = { method: route.method, url: spare(route, request.url), headers };
  if (request.body.payload !== undefined) options.payload = request.body.payload;
  return app.inject(options);
}

function checkAnswer(route: RouteSpec, request: Request, res: Awaited<ReturnType<typeof send>>): void {
  const fail: (why: string) => never = (why) => {
    throw new Error(`${why}\n${describe(route, request, res.statusCode, res.body)}`);
  };
  if (res.statusCode >= 500) fail('a 5xx answer');
  if (res.statusCode < 400) return;
  if (!String(res.headers['content-type']).startsWith('application/problem+json')) fail('not problem+json');
  let problem: Record<string, unknown>;
  try {
    problem = res.json();
  } catch {
    fail('the problem is not JSON');
  }
  for (const field of ['type', 'title', 'detail', 'code'])
    if (typeof problem[field] !== 'string' || problem[field] === '') fail(`problem.${field} is missing`);
  if (problem.status !== res.statusCode) fail('problem.status differs from the HTTP status');
  if (STACK.test(res.body)) fail('a stack trace in the answer');
}

// ---------------------------------------------------------------------------

t.test('the fuzzed route table is every route the app serves', async (t) => {
  for (const route of ROUTES)
    t.ok(app.hasRoute({ method: route.method, url: route.path }), `${route.method} ${route.path} exists`);
  const served = new Set<string>();
  const tree = app.printRoutes({ commonPrefix: false, includeHooks: false });
  // Lines look like `├── /api/v1/users (GET, HEAD)`, indented by nesting; rebuild full paths.
  const stack: Array<{ depth: number; path: string }> = [];
  for (const line of tree.split('\n')) {
    const m = /^([│├└─\s]*)(\S.*?) \(([^)]*)\)$/.exec(line) ?? /^([│├└─\s]*)(\S.*)$/.exec(line);
    if (m === null) continue;
    const depth = m[1]!.length;
    while (stack.length > 0 && stack[stack.length - 1]!.depth >= depth) stack.pop();
    const path = (stack.at(-1)?.path ?? '') + m[2]!;
    stack.push({ depth, path });
    for (const method of (m[3] ?? '').split(',').map((s) => s.trim()))
      if (method !== '' && method !== 'HEAD') served.add(`${method} ${path}`);
  }
  const known = new Set(ROUTES.map((r) => `${r.method} ${r.path}`));
  const outside = new Set([
    'GET /metrics',
    'GET /docs',
    'GET /docs/',
    'GET /docs/*',
    'GET /docs/json',
    'GET /docs/yaml',
    'GET /docs/static/*',
    'GET /docs/static/index.html',
    'GET /docs/static/swagger-initializer.js',
  ]);
  const missing = [...served].filter((r) => !known.has(r) && !outside.has(r));
  t.same(missing, [], 'no route escapes the fuzz');
  t.ok(served.size >= ROUTES.length, `the route tree was read (${served.size} routes)`);
});

let total = 0;
for (const route of ROUTES) {
  const runs = route.runs ?? DEFAULT_RUNS;
  t.test(
    `${route.method} ${route.path}: ${runs} random requests, none answered 5xx, every error a problem`,
    async (t) => {
      await fc.assert(
        fc.asyncProperty(requests(route), async (request) => {
          const res = await send(route, request);
          checkAnswer(route, request, res);
        }),
        { numRuns: runs },
      );
      total += runs;
      t.pass(`${runs} requests answered well`);
    },
  );
}

t.test('the admin and the user the fuzz ran as still work, and prototypes are clean', async (t) => {
  for (const account of [admin, user]) {
    const res = await app.inject({ method: 'GET', url: '/api/v1/me', headers: account.headers });
    t.equal(res.statusCode, 200, `${account.user.username} is still signed in`);
  }
  t.equal(({} as Record<string, unknown>).role, undefined, 'Object.prototype was not polluted');
  t.ok(total >= 3000, `${total} random requests in all`);
});
