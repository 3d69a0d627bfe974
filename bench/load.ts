/**
 * The bulk load: the generated rows, held in memory as the buffers COPY sends, are
 * streamed into the migrated schema (all constraints, foreign key and indexes in
 * place) and the COPYs alone are timed; then the same scripts into a bare table for
 * comparison, and VACUUM ANALYZE.
 */
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Sql } from '../src/db/client.ts';
import { DAY, SCRIPT_COLUMNS, type Span, scriptRows, USER_COLUMNS, userRows } from './data.ts';

/** COPY `chunks` (text format) into `table`; resolves once the server has them all. */
export async function copyInto(sql: Sql, table: string, columns: string[], chunks: Iterable<Buffer>) {
  const writable = await sql`copy ${sql(table)} (${sql(columns)}) from stdin`.writable();
  await pipeline(Readable.from(chunks), writable);
}

/** The rows in memory, as the buffers COPY will send, so that the load is timed apart from generation. */
function materialise(chunks: Iterable<string>): { buffers: Buffer[]; bytes: number } {
  const buffers: Buffer[] = [];
  let bytes = 0;
  for (const chunk of chunks) {
    const buffer = Buffer.from(chunk);
    buffers.push(buffer);
    bytes += buffer.length;
  }
  return { buffers, bytes };
}

export interface LoadReport {
  users: number;
  scripts: number;
  /** Bytes of COPY text sent. */
  bytes: number;
  /** Generating the rows in Node (not part of the load rate). */
  generateSeconds: number;
  usersSeconds: number;
  scriptsSeconds: number;
  /** The same script rows into a table without checks, foreign key or indexes. */
  bareScriptsSeconds: number;
  /** Rows loaded per second of COPY (users + scripts). */
  rowsPerSecond: number;
  analyzeSeconds: number;
}

/**
 * Loads `userCount` users and `scriptCount` scripts with COPY, into the migrated
 * schema with all its constraints and indexes, then VACUUM ANALYZE. The rows are
 * generated first and the COPYs alone are timed.
 */
export async function loadData(
  sql: Sql,
  userCount: number,
  scriptCount: number,
  log: (line: string) => void,
): Promise<LoadReport> {
  const now = Date.now();
  const users: Span = { start: now - 730 * DAY, length: 729 * DAY };
  const scripts: Span = { start: now - 365 * DAY, length: 365 * DAY - 3_600_000 };
  let start = performance.now();
  const userData = materialise(userRows(userCount, now, users));
  let generateSeconds = (performance.now() - start) / 1000;
  start = performance.now();
  await copyInto(sql, 'users', USER_COLUMNS, userData.buffers);
  const usersSeconds = (performance.now() - start) / 1000;
  log(`  users: ${userCount} rows in ${usersSeconds.toFixed(2)} s`);
  const [range] = await sql<{ min: number; max: number; count: number }[]>`
    select min(id) as min, max(id) as max, count(*) as count from users`;
  if (!range || range.count !== userCount || range.max - range.min + 1 !== userCount)
    throw new Error(`users were not loaded as expected: ${JSON.stringify(range)}`);
  start = performance.now();
  const scriptData = materialise(
    scriptRows(scriptCount, now, scripts, { ...users, firstId: range.min, count: userCount }),
  );
  generateSeconds += (performance.now() - start) / 1000;
  start = performance.now();
  await copyInto(sql, 'scripts', SCRIPT_COLUMNS, scriptData.buffers);
  const scriptsSeconds = (performance.now() - start) / 1000;
  log(`  scripts: ${scriptCount} rows in ${scriptsSeconds.toFixed(2)} s`);
  // Baseline: the same rows into a table of the same columns without checks, foreign key or indexes.
  await sql`create table scripts_bare (like scripts including defaults including identity)`;
  start = performance.now();
  await copyInto(sql, 'scripts_bare', SCRIPT_COLUMNS, scriptData.buffers);
  const bareScriptsSeconds = (performance.now() - start) / 1000;
  await sql`drop table scripts_bare`;
  log(`  the same scripts into a bare table: ${bareScriptsSeconds.toFixed(2)} s`);
  start = performance.now();
  await sql`vacuum (analyze) users, scripts`;
  const analyzeSeconds = (performance.now() - start) / 1000;
  return {
    users: userCount,
    scripts: scriptCount,
    bytes: userData.bytes + scriptData.bytes,
    generateSeconds,
    usersSeconds,
    scriptsSeconds,
    bareScriptsSeconds,
    rowsPerSecond: (userCount + scriptCount) / (usersSeconds + scriptsSeconds),
    analyzeSeconds,
  };
}
