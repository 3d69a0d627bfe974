/**
 * Every variable the process reads from its environment: its type, range and
 * default, with a description (README's configuration table mirrors it, and
 * test/readme.test.ts keeps the two together). Read and checked by config.ts.
 */
import { Type } from '@sinclair/typebox';

const Int = (min: number, max: number, def: number, description: string) =>
  Type.Integer({ minimum: min, maximum: max, default: def, description });

/** Every variable the process reads, with its default. README's configuration table mirrors this. */
export const ConfigSchema = Type.Object({
  NODE_ENV: Type.Union([Type.Literal('development'), Type.Literal('production'), Type.Literal('test')], {
    default: 'development',
  }),
  HOST: Type.String({ minLength: 1, default: '127.0.0.1' }),
  PORT: Int(0, 65535, 3000, 'HTTP port'),
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
    { default: 'info' },
  ),
  DATABASE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
  DATABASE_READ_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
  REPLICA_MAX_LAG_SECONDS: Int(
    1,
    3600,
    10,
    'a read replica further behind than this is bypassed (reads go to the primary)',
  ),
  DB_POOL_MAX: Int(1, 1000, 10, 'connections in the pool'),
  DB_IDLE_TIMEOUT_SECONDS: Int(0, 86400, 30, 'close idle connections after'),
  DB_MAX_LIFETIME_SECONDS: Int(0, 86400, 1800, 'recycle connections after'),
  DB_CONNECT_TIMEOUT_SECONDS: Int(1, 300, 5, 'give up connecting after'),
  DB_STATEMENT_TIMEOUT_MS: Int(0, 3_600_000, 5_000, 'server-side statement_timeout'),
  DB_QUERY_TIMEOUT_MS: Int(
    100,
    3_600_000,
    6_000,
    'client-side limit on every query (above statement_timeout)',
  ),
  DB_PREPING_IDLE_SECONDS: Int(
    0,
    86400,
    10,
    'after this long without an answer, a connection is checked before the next query; 0 is off',
  ),
  DB_PREPARE: Type.Boolean({ default: true, description: 'false behind PgBouncer in transaction mode' }),
  SLOW_QUERY_MS: Int(0, 3_600_000, 200, 'queries slower than this are logged at warn'),
  EMBEDDED_PG_DIR: Type.String({ minLength: 1, default: '.data/postgres' }),
  EMBEDDED_PG_PORT: Int(0, 65535, 0, '0 picks a free port'),
  STORAGE_DIR: Type.String({ minLength: 1, default: '.data/storage' }),
  MAX_UPLOAD_BYTES: Int(1, 1024 * 1024 * 1024, 10 * 1024 * 1024, 'largest accepted script'),
  MAX_SCRIPTS_PER_USER: Int(1, 10_000_000, 1000, 'scripts one account may keep'),
  MAX_STORAGE_BYTES_PER_USER: Int(
    1,
    2 ** 50,
    256 * 1024 * 1024,
    'bytes of scripts one account may keep, all its uploads together',
  ),
  UPLOAD_RATE_LIMIT_MAX: Int(1, 100_000, 30, 'uploads per window and account'),
  UPLOAD_RATE_LIMIT_WINDOW_SECONDS: Int(1, 86400, 60, 'the upload rate-limit window'),
  TOKEN_TTL_HOURS: Int(1, 24 * 365, 24 * 7, 'lifetime of a bearer token'),
  AUTH_CACHE_TTL_SECONDS: Int(0, 3600, 30, 'how long a verified token is trusted without a query'),
  AUTH_RATE_LIMIT_MAX: Int(1, 100_000, 10, 'login/register attempts per window and client'),
  AUTH_RATE_LIMIT_WINDOW_SECONDS: Int(1, 86400, 60, 'the rate-limit window'),
  MAX_EVENT_LOOP_DELAY_MS: Int(
    0,
    60_000,
    200,
    "shed load (503) while the event loop's turns were this late on average over the last second; 0 turns it off",
  ),
  MAX_EVENT_LOOP_UTILIZATION: Type.Number({
    minimum: 0,
    maximum: 1,
    default: 0,
    description:
      'shed load (503) while the event loop was busier than this over the last second; 0 (the default) turns it off',
  }),
  TRUST_PROXY: Type.String({
    minLength: 1,
    default: 'false',
    description:
      'proxies in front whose X-Forwarded-For is believed: `false`, a hop count, or addresses/CIDRs (comma-separated)',
  }),
  CORS_ORIGINS: Type.String({
    default: '',
    description: 'comma-separated web origins allowed to call the API with credentials; empty: no CORS',
  }),
  GOOGLE_CLIENT_ID: Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: 255,
      description: 'OAuth client id; unset turns Google sign-in off',
    }),
  ),
  GOOGLE_JWKS_URL: Type.String({
    pattern: '^https?://',
    default: 'https://www.googleapis.com/oauth2/v3/certs',
    description: "Google's signing keys (JWKS)",
  }),
  GOOGLE_JWKS_TIMEOUT_MS: Int(100, 60_000, 5_000, 'a sign-in waits at most this for the keys (then 503)'),
  GOOGLE_JWKS_COOLDOWN_SECONDS: Int(
    0,
    3600,
    30,
    'an unknown key id refetches the keys at most once per this',
  ),
  LOGIN_MAX_FAILURES: Int(1, 1000, 10, 'sign-in attempts per email and window before the email is locked'),
  LOGIN_FAILURE_WINDOW_SECONDS: Int(1, 86400, 900, 'the window in which sign-in attempts per email count'),
  LOGIN_LOCK_SECONDS: Int(1, 86400, 900, 'how long an email is locked after too many attempts'),
  RUN_RETENTION_DAYS: Int(
    1,
    36500,
    90,
    'runs (and their output) finished longer ago are deleted, except each script’s latest',
  ),
  IBKR_TOKEN_KEY: Type.Optional(
    Type.String({ pattern: '^[A-Za-z0-9+/]{43}=$', description: '32 bytes, base64' }),
  ),
  IBKR_TOKEN_KEYS: Type.Optional(
    Type.String({ minLength: 1, description: 'keyring: kid:base64key,kid:base64key (newest first)' }),
  ),
  IBKR_TOKEN_KEY_FILE: Type.Optional(
    Type.String({ minLength: 1, description: 'where a generated key is kept when no key is set' }),
  ),
  EXECUTOR_ENABLED: Type.Boolean({ default: true, description: 'npm start also runs an executor' }),
  EXECUTOR_CONCURRENCY: Int(1, 64, 2, 'scripts one executor runs at once'),
  MAX_CONCURRENT_SCRIPTS: Int(1, 1000, 5, 'queued + running scripts per user'),
  MAX_EXECUTION_SECONDS: Int(1, 86400, 300, 'wall-clock limit of a run'),
  MAX_LOG_BYTES: Int(1024, 64 * 1024 * 1024, 1024 * 1024, 'captured output per run'),
  SCRIPT_MEMORY_MB: Int(16, 65536, 512, 'memory of a run, all its processes and tmpfs together'),
  SCRIPT_CPU_SECONDS: Int(1, 86400, 300, 'CPU-time limit of a run'),
  SCRIPT_MAX_PROCESSES: Int(1, 4096, 64, 'processes of the unprivileged script user'),
  // Each run gets a uid/gid of its own from SCRIPT_UID/SCRIPT_GID … +1023 (see src/executor/uid-pool.ts).
  SCRIPT_UID: Int(
    1,
    4_294_967_294 - 1024,
    61000,
    'first of the 1024 uids runs get when the executor is root',
  ),
  SCRIPT_GID: Int(
    1,
    4_294_967_294 - 1024,
    61000,
    'first of the 1024 gids runs get when the executor is root',
  ),
  EXECUTOR_ALLOW_SAME_USER: Type.Optional(
    Type.Boolean({
      description:
        'a non-root executor may run scripts as its own user; defaults to true unless NODE_ENV=production',
    }),
  ),
  SCRIPT_SANDBOX: Type.Union(
    [Type.Literal('auto'), Type.Literal('bwrap'), Type.Literal('unshare'), Type.Literal('off')],
    {
      default: 'auto',
      description:
        'namespaces, private tmpfs and a whitelisted read-only file system per run (bubblewrap; auto falls back to unshare without it); off: uid and rlimits only',
    },
  ),
  SCRIPT_TMP_MB: Int(1, 65536, 64, 'size of each private tmpfs of a run (/tmp, /var/tmp, /dev/shm, scratch)'),
  SCRIPT_NETWORK: Type.Union([Type.Literal('internet'), Type.Literal('none')], {
    default: 'internet',
    description: 'internet: public addresses only (nftables); none: an empty network namespace',
  }),
  SCRIPT_NETWORK_ALLOW: Type.String({
    default: '',
    pattern: '^[0-9A-Fa-f.:/\\[\\], ]*$',
    description: 'comma list of CIDRs or host:port a run may reach despite SCRIPT_NETWORK=internet',
  }),
  EXECUTOR_LEASE_SECONDS: Int(2, 3600, 30, 'a claim lapses unless renewed within'),
  EXECUTOR_POLL_MS: Int(50, 600_000, 2000, 'fallback poll when no NOTIFY arrives'),
  EXECUTOR_SHUTDOWN_GRACE_SECONDS: Int(0, 3600, 10, 'running scripts may finish within this on shutdown'),
  SCHEDULE_CATCHUP_SECONDS: Int(
    0,
    86400,
    300,
    'an occurrence missed while no scheduler ran still fires on start if at most this old',
  ),
  EXECUTOR_WORK_DIR: Type.String({
    minLength: 1,
    default: '/tmp/dollarclub-runs',
    description: 'scratch folders of runs',
  }),
  METRICS_PORT: Int(0, 65535, 0, 'a listener of its own for /metrics and /health (worker and API); 0 is off'),
  METRICS_HOST: Type.String({
    minLength: 1,
    default: '127.0.0.1',
    description: 'address of the metrics listener',
  }),
  METRICS_TOKEN: Type.Optional(
    Type.String({
      minLength: 16,
      maxLength: 256,
      pattern: '^\\S+$',
      description:
        'serves /metrics on the API port to requests that present it, and the detail of /health/database',
    }),
  ),
  PYTHON_BIN: Type.String({ minLength: 1, default: '/usr/bin/python3' }),
  NODE_BIN: Type.String({
    minLength: 1,
    default: process.execPath,
    description: 'runs .js and compiled .ts',
  }),
});
