/**
 * The environment, read once and validated: every setting of the process comes
 * from here, typed. Only entry points (main, worker, cli) call `loadConfig`;
 * everything else receives the object, so tests can build one by hand.
 */
import { isIP } from 'node:net';
import { type Static, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { parseAllowList } from './executor/sandbox/network.ts';
import { parseKeyring } from './services/secret-box.ts';

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
  MAX_EVENT_LOOP_UTILIZATION: Type.Number({
    minimum: 0,
    maximum: 1,
    default: 0.98,
    description: 'shed load (503) while the event loop is busier than this; 0 turns it off',
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

export type Config = Static<typeof ConfigSchema>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/**
 * Builds the config from `env` (process.env by default). Empty strings count as
 * unset. Throws ConfigError naming every bad variable.
 */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const input: Record<string, unknown> = {};
  for (const key of Object.keys(ConfigSchema.properties)) {
    const raw = env[key];
    if (raw !== undefined && raw !== '') input[key] = raw;
  }
  const withDefaults = Value.Default(ConfigSchema, Value.Convert(ConfigSchema, { ...input }));
  const errors = [...Value.Errors(ConfigSchema, withDefaults)];
  if (errors.length > 0) {
    const lines = errors.map((e) => {
      const name = e.path.replace(/^\//, '');
      const shown = /(URL|KEY|KEYS|TOKEN)$/.test(name) ? '(hidden)' : JSON.stringify(input[name]);
      return `  ${name}=${shown}: ${e.message}`;
    });
    throw new ConfigError(`invalid configuration:\n${[...new Set(lines)].join('\n')}`);
  }
  const config = withDefaults as Config;
  const proxyProblem = trustProxyProblem(config.TRUST_PROXY);
  if (proxyProblem !== null) throw new ConfigError(`invalid configuration:\n  ${proxyProblem}`);
  try {
    parseAllowList(config.SCRIPT_NETWORK_ALLOW);
  } catch (error) {
    throw new ConfigError(`invalid configuration:\n  ${(error as Error).message}`);
  }
  // Scripts of a non-root executor run as its own user and can read its environment
  // through /proc: acceptable on a developer's machine, never by default in production.
  config.EXECUTOR_ALLOW_SAME_USER ??= config.NODE_ENV !== 'production';
  if (config.IBKR_TOKEN_KEYS !== undefined) {
    try {
      parseKeyring(config.IBKR_TOKEN_KEYS);
    } catch (error) {
      throw new ConfigError(
        `invalid configuration:\n  IBKR_TOKEN_KEYS=(hidden): ${(error as Error).message}`,
      );
    }
  }
  if (
    config.NODE_ENV === 'production' &&
    config.IBKR_TOKEN_KEY === undefined &&
    config.IBKR_TOKEN_KEYS === undefined
  ) {
    throw new ConfigError(
      'invalid configuration:\n  IBKR_TOKEN_KEY is required in production (32 random bytes, base64: `openssl rand -base64 32`), or IBKR_TOKEN_KEYS',
    );
  }
  corsOrigins(config); // refuses a malformed CORS_ORIGINS at start
  return config;
}

/** What Fastify's `trustProxy` gets from TRUST_PROXY: false, a hop count, or addresses/CIDRs. */
export type TrustProxy = false | number | string[];

/** Names proxy-addr (Fastify's trustProxy) knows for whole ranges. */
const PROXY_RANGE_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal']);

/** TRUST_PROXY as Fastify takes it (loadConfig has refused a value this cannot read). */
export function trustProxyOf(value: string): TrustProxy {
  const v = value.trim().toLowerCase();
  if (v === 'false') return false;
  if (/^\d+$/.test(v)) return Number(v) === 0 ? false : Number(v);
  return proxyEntries(value);
}

function proxyEntries(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

function trustProxyProblem(value: string): string | null {
  const v = value.trim().toLowerCase();
  if (v === 'true')
    return (
      'TRUST_PROXY=true is refused: it trusts every hop, so any client picks its own address with ' +
      'X-Forwarded-For and gets around the rate limits. Give the number of proxies in front of the ' +
      'app (TRUST_PROXY=1) or their addresses or CIDRs (TRUST_PROXY=10.0.0.0/8,127.0.0.1)'
    );
  if (v === 'false' || /^\d{1,2}$/.test(v)) return null;
  const entries = proxyEntries(value);
  const bad = entries.filter((entry) => !isAddressOrCidr(entry));
  if (bad.length === 0 && entries.length > 0) return null;
  return (
    `TRUST_PROXY=${JSON.stringify(value)}: expected false, a hop count (0-99), or comma-separated ` +
    `IP addresses or CIDRs of the proxies${bad.length > 0 ? ` (not an address or CIDR: ${bad.join(', ')})` : ''}`
  );
}

function isAddressOrCidr(entry: string): boolean {
  if (PROXY_RANGE_NAMES.has(entry.toLowerCase())) return true;
  const [address, prefix, ...rest] = entry.split('/');
  if (rest.length > 0 || address === undefined) return false;
  const family = isIP(address);
  if (family === 0) return false;
  if (prefix === undefined) return true;
  if (!/^\d{1,3}$/.test(prefix)) return false;
  return Number(prefix) <= (family === 4 ? 32 : 128);
}

/**
 * The origins of CORS_ORIGINS, each exactly as a browser sends it in `Origin`
 * (`scheme://host[:port]`, no path, no trailing slash). `*` is refused: credentials
 * are never allowed for every origin.
 */
export function corsOrigins(config: Pick<Config, 'CORS_ORIGINS'>): string[] {
  const origins: string[] = [];
  for (const raw of config.CORS_ORIGINS.split(',')) {
    const entry = raw.trim();
    if (entry === '') continue;
    let origin: string | null = null;
    try {
      const url = new URL(entry);
      if ((url.protocol === 'http:' || url.protocol === 'https:') && url.origin === entry) origin = entry;
    } catch {
      // not a URL: refused below
    }
    if (origin === null)
      throw new ConfigError(
        `invalid configuration:\n  CORS_ORIGINS: ${JSON.stringify(entry)} is not an origin (scheme://host[:port], no path)`,
      );
    origins.push(origin);
  }
  return origins;
}

/**
 * How long shutdown may take before the process is exited regardless: the grace
 * period of running scripts, then up to a lease period of retries to record their
 * outcomes while the database is unavailable (after that, their leases lapse and
 * another executor fails them), plus 10 s for the rest.
 */
export function shutdownDeadlineMs(config: Config): number {
  return (config.EXECUTOR_SHUTDOWN_GRACE_SECONDS + config.EXECUTOR_LEASE_SECONDS + 10) * 1000;
}
