/**
 * The environment, read once and validated: every setting of the process comes
 * from here, typed. Only entry points (main, worker, cli) call `loadConfig`;
 * everything else receives the object, so tests can build one by hand.
 */
import { isIP } from 'node:net';
import type { Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { ConfigSchema } from './config-schema.ts';
import { parseAllowList } from './executor/sandbox/network.ts';
import { parseKeyring } from './services/secret-box.ts';

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
  const converted = Value.Convert(ConfigSchema, { ...input }) as Record<string, unknown>;
  // TypeBox reads an integer with parseInt ('1.5' and '1e2' would both be 1): an integer
  // setting takes whole decimal numbers only; anything else stays text, refused below.
  for (const [key, raw] of Object.entries(input))
    if (isIntegerSetting(key) && !/^\s*[+-]?\d+\s*$/.test(String(raw))) converted[key] = raw;
  const withDefaults = Value.Default(ConfigSchema, converted);
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

function isIntegerSetting(key: string): boolean {
  return (ConfigSchema.properties as Record<string, { type?: unknown }>)[key]?.type === 'integer';
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
