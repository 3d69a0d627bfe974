import t from 'tap';
import { ConfigError, loadConfig, trustProxyOf } from '../src/config.ts';

t.test('defaults apply when nothing is set', async (t) => {
  const config = loadConfig({});
  t.match(config, {
    NODE_ENV: 'development',
    PORT: 3000,
    DB_POOL_MAX: 10,
    MAX_UPLOAD_BYTES: 10 * 1024 * 1024,
    MAX_CONCURRENT_SCRIPTS: 5,
    EXECUTOR_CONCURRENCY: 2,
    DB_PREPARE: true,
  });
  t.equal(config.DATABASE_URL, undefined);
});

t.test('values are converted from strings; empty strings count as unset', async (t) => {
  const config = loadConfig({ PORT: '8080', DB_PREPARE: 'false', SLOW_QUERY_MS: '', LOG_LEVEL: 'debug' });
  t.equal(config.PORT, 8080);
  t.equal(config.DB_PREPARE, false);
  t.equal(config.SLOW_QUERY_MS, 200);
  t.equal(config.LOG_LEVEL, 'debug');
});

t.test('an integer setting takes whole decimal numbers only, never a truncated one', async (t) => {
  t.equal(loadConfig({ PORT: ' 8080 ' }).PORT, 8080, 'surrounding blanks are fine');
  t.equal(loadConfig({ RUN_RETENTION_DAYS: '+7' }).RUN_RETENTION_DAYS, 7);
  // parseInt would read each of these as 1 (or 0): one day of retention for `1e2`.
  for (const bad of ['1.5', '1e2', '0x10', '7 days', '1_000']) {
    const error = t.throws(() => loadConfig({ RUN_RETENTION_DAYS: bad, PORT: bad }), ConfigError, bad);
    t.match(error, { message: `RUN_RETENTION_DAYS="${bad}": Expected integer` }, `${bad}: named`);
    t.match(error, { message: `PORT="${bad}": Expected integer` }, `${bad}: every integer alike`);
  }
});

t.test('a bad value stops with a message naming every bad variable, hiding secrets', async (t) => {
  const error = t.throws(() =>
    loadConfig({
      PORT: 'eighty',
      DB_POOL_MAX: '0',
      DATABASE_URL: 'mysql://user:pw@host/db',
      LOG_LEVEL: 'loud',
    }),
  ) as ConfigError;
  t.type(error, ConfigError);
  t.match(error.message, /PORT="eighty"/);
  t.match(error.message, /DB_POOL_MAX="0"/);
  t.match(error.message, /LOG_LEVEL="loud"/);
  t.match(error.message, /DATABASE_URL=\(hidden\)/);
  t.notMatch(error.message, /pw@host/);
});

t.test('production requires the IBKR token key', async (t) => {
  t.throws(() => loadConfig({ NODE_ENV: 'production' }), {
    message: /IBKR_TOKEN_KEY is required in production/,
  });
  const key = Buffer.alloc(32, 7).toString('base64');
  t.equal(loadConfig({ NODE_ENV: 'production', IBKR_TOKEN_KEY: key }).IBKR_TOKEN_KEY, key);
  t.throws(() => loadConfig({ IBKR_TOKEN_KEY: 'short' }), { message: /IBKR_TOKEN_KEY=\(hidden\)/ });
});

t.test('CORS_ORIGINS takes exact origins only', async (t) => {
  const { corsOrigins } = await import('../src/config.ts');
  t.same(corsOrigins(loadConfig({ CORS_ORIGINS: 'https://a.example, http://127.0.0.1:8080' })), [
    'https://a.example',
    'http://127.0.0.1:8080',
  ]);
  t.same(corsOrigins(loadConfig({})), []);
  for (const bad of ['*', 'https://a.example/', 'https://a.example/path', 'a.example', 'ftp://a.example'])
    t.throws(() => loadConfig({ CORS_ORIGINS: bad }), ConfigError, bad);
});

t.test('TRUST_PROXY takes false, a hop count or proxy addresses, and refuses true', async (t) => {
  const error = t.throws(() => loadConfig({ TRUST_PROXY: 'true' })) as ConfigError;
  t.type(error, ConfigError);
  t.match(error.message, /TRUST_PROXY=true is refused: it trusts every hop.*TRUST_PROXY=1/s);
  t.throws(() => loadConfig({ TRUST_PROXY: 'TRUE' }), { message: /is refused/ });
  // Addresses here are configuration text only, nothing is sent to them, and they are
  // documentation ranges (RFC 5737, RFC 3849) besides loopback.
  for (const bad of ['yes', '198.51.100.0/33', '300.1.1.1', '198.51.100.1/24/2', ',', '::1/129', '100'])
    t.throws(
      () => loadConfig({ TRUST_PROXY: bad }),
      { message: /TRUST_PROXY=.*expected false, a hop count/ },
      bad,
    );
  t.equal(trustProxyOf(loadConfig({}).TRUST_PROXY), false, 'off by default');
  t.equal(trustProxyOf(loadConfig({ TRUST_PROXY: '0' }).TRUST_PROXY), false);
  t.equal(trustProxyOf(loadConfig({ TRUST_PROXY: '2' }).TRUST_PROXY), 2);
  t.same(
    trustProxyOf(loadConfig({ TRUST_PROXY: '198.51.100.0/24, 127.0.0.1,::1,2001:db8::/32' }).TRUST_PROXY),
    ['198.51.100.0/24', '127.0.0.1', '::1', '2001:db8::/32'],
  );
  t.same(trustProxyOf(loadConfig({ TRUST_PROXY: 'loopback' }).TRUST_PROXY), ['loopback']);
});
