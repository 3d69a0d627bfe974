/**
 * The connection pool. One per process (two with a read replica), built from
 * validated config: pool limits, timeouts, every session in UTC with a
 * statement_timeout, and int8/numeric parsed to JS numbers (ids and our
 * numeric(10,x) columns fit in a double exactly).
 *
 * The driver (postgres 3.4.9) is patched at install (`npm ci`'s postinstall runs
 * patch-package over src/db/driver-patches/): a connection that closed while a
 * statement's bytes waited for their setImmediate kept that timer handle and those
 * bytes, so after reconnecting it never sent its start-up message and every statement
 * given to it waited for its time limit (seen after a pg_terminate_backend or a server
 * restart meeting a query about to go out). And the pool's queues kept a slot for every
 * connection they ever handed out until they emptied, which the busy queue of a pool under
 * steady load never does: it grew without bound, and each connection going idle scanned it.
 * test/db/driver-patch.test.ts makes that order certain and runs a queue that is never empty;
 * both fail without the patch. Drop the patch when the driver fixes them.
 */

import net from 'node:net';
import type { Logger } from 'pino';
import postgres from 'postgres';

/** int8 (20) and numeric (1700) as numbers; `count(*)` is int8 too. */
const types = {
  bigint: { to: 20, from: [20], serialize: (x: number) => String(x), parse: (x: string) => Number(x) },
  numeric: { to: 1700, from: [1700], serialize: (x: number) => String(x), parse: (x: string) => Number(x) },
};

export type Types = { bigint: number; numeric: number };
export type Sql = postgres.Sql<Types>;
export type TransactionSql = postgres.TransactionSql<Types>;
/** A piece of SQL made with the sql`` tag, to embed in a statement. */
export type Fragment = postgres.PendingQuery<postgres.Row[]>;

export interface PoolOptions {
  url: string;
  max: number;
  idleTimeoutSeconds: number;
  maxLifetimeSeconds: number;
  connectTimeoutSeconds: number;
  statementTimeoutMs: number;
  prepare: boolean;
  applicationName: string;
}

/**
 * The driver's sockets with Nagle's algorithm off. The driver keeps Node's default (on),
 * so after a large write (a script's bytes in a COPY) the next small message (CopyDone,
 * COMMIT) waited for the server's delayed ACK: ~40 ms per upload on Linux, measured with
 * bench/content.ts. A socket the driver is given is one it does not connect itself, so
 * this connects it, going round the URL's hosts as the driver would; the driver writes
 * to it while it connects (Node queues the writes) and its connect_timeout still runs
 * until the server is ready. Unix sockets (`path`) have no Nagle to turn off.
 */
function noDelaySockets(): (options: {
  host: string[];
  port: number[];
  path?: string | false;
}) => net.Socket {
  let next = 0;
  return (options) => {
    if (options.path) return net.connect(options.path);
    const at = next++ % options.host.length;
    const host = options.host[at]!;
    const port = options.port[at] ?? options.port[0]!;
    return Object.assign(net.connect({ host, port, noDelay: true }), { host, port });
  };
}

export function createPool(options: PoolOptions, log: Logger): Sql {
  return postgres(options.url, {
    // Not in the driver's types, but a documented option (custom sockets).
    ...({ socket: noDelaySockets() } as object),
    max: options.max,
    idle_timeout: options.idleTimeoutSeconds === 0 ? undefined : options.idleTimeoutSeconds,
    max_lifetime: options.maxLifetimeSeconds === 0 ? null : options.maxLifetimeSeconds,
    connect_timeout: options.connectTimeoutSeconds,
    prepare: options.prepare,
    types,
    connection: {
      application_name: options.applicationName,
      TimeZone: 'UTC',
      // Timestamps as text (keyset cursors) in ISO 8601, whatever the server's default.
      DateStyle: 'ISO, MDY',
      statement_timeout: options.statementTimeoutMs,
      // A transaction left open by a crashed request must not hold locks for ever.
      idle_in_transaction_session_timeout: 60_000,
    },
    onnotice: (notice) =>
      log.info({ notice: { code: notice.code, message: notice.message } }, 'postgres notice'),
  });
}

/** Pool options from the process config, for a given URL and application name. */
export function poolOptionsFrom(
  config: {
    DB_POOL_MAX: number;
    DB_IDLE_TIMEOUT_SECONDS: number;
    DB_MAX_LIFETIME_SECONDS: number;
    DB_CONNECT_TIMEOUT_SECONDS: number;
    DB_STATEMENT_TIMEOUT_MS: number;
    DB_PREPARE: boolean;
  },
  url: string,
  applicationName: string,
): PoolOptions {
  return {
    url,
    applicationName,
    max: config.DB_POOL_MAX,
    idleTimeoutSeconds: config.DB_IDLE_TIMEOUT_SECONDS,
    maxLifetimeSeconds: config.DB_MAX_LIFETIME_SECONDS,
    connectTimeoutSeconds: config.DB_CONNECT_TIMEOUT_SECONDS,
    statementTimeoutMs: config.DB_STATEMENT_TIMEOUT_MS,
    prepare: config.DB_PREPARE,
  };
}
