import t from 'tap';
import { ConfigError, loadConfig } from '../src/config.js';

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
  const { corsOrigins } = await import('../src/config.js');
  t.same(corsOrigins(loadConfig({ CORS_ORIGINS: 'https://a.example, http://127.0.0.1:8080' })), [
    'https://a.example',
    'http://127.0.0.1:8080',
  ]);
  t.same(corsOrigins(loadConfig({})), []);
  for (const bad of ['*', 'https://a.example/', 'https://a.example/path', 'a.example', 'ftp://a.example'])
    t.throws(() => loadConfig({ CORS_ORIGINS: bad }), ConfigError, bad);
});
