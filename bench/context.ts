/**
 * What every benchmark receives: the pool and the app's repositories over it
 * (built by compose(), as the server builds them), inputs sampled from the loaded
 * data, and the measurement settings. `captureQuery` records the exact SQL text
 * and parameters a repository call sends, so a baseline can send the very same.
 */
import type { Sql } from '../src/db/client.ts';
import type { Repositories } from '../src/repositories/index.ts';
import type { CompareOptions } from './measure.ts';

export interface Samples {
  /** Random user ids. */
  userIds: number[];
  /** Random scripts with their owner. */
  scripts: Array<{ id: number; user_id: number }>;
}

export interface BenchContext {
  url: string;
  sql: Sql;
  repos: Repositories;
  samples: Samples;
  /** Settings of interleaved comparisons of fast calls (sub-millisecond). */
  fast: CompareOptions;
  /** Settings of interleaved comparisons of slow calls (tens of milliseconds and more). */
  slow: CompareOptions;
  scale: number;
  log: (line: string) => void;
}

export interface CapturedQuery {
  text: string;
  /** As the driver serialised them (strings). */
  parameters: unknown[];
}

type DebugHook = (connection: number, query: string, parameters: unknown[], types: unknown[]) => void;

/** Runs `fn` and returns every query the pool sent meanwhile (run nothing else concurrently). */
export async function captureQueries<T>(
  sql: Sql,
  fn: () => Promise<T>,
): Promise<{ result: T; queries: CapturedQuery[] }> {
  const queries: CapturedQuery[] = [];
  const options = sql.options as unknown as { debug: DebugHook | boolean };
  const previous = options.debug;
  options.debug = (_connection, text, parameters) => queries.push({ text, parameters: [...parameters] });
  try {
    return { result: await fn(), queries };
  } finally {
    options.debug = previous;
  }
}

/** The one query `fn` sends; throws when it sends none or more (it would not be one round trip). */
export async function captureQuery(sql: Sql, fn: () => Promise<unknown>): Promise<CapturedQuery> {
  const { queries } = await captureQueries(sql, fn);
  if (queries.length !== 1)
    throw new Error(`expected one query, got ${queries.length}: ${queries.map((q) => q.text).join(' | ')}`);
  return queries[0] as CapturedQuery;
}

/**
 * Checks that `expected` (the parameters a baseline will send for the same input)
 * are those the repository sent, so that both sides run the same statement with
 * the same values.
 */
export function assertSameParameters(what: string, captured: CapturedQuery, expected: unknown[]): void {
  const a = JSON.stringify(captured.parameters.map(String));
  const b = JSON.stringify(expected.map(String));
  if (a !== b) throw new Error(`${what}: the repository sent parameters ${a}, the baseline would send ${b}`);
}

/** Fisher-Yates with a seeded PRNG, so runs walk the same inputs. */
export function shuffled<T>(items: T[], seed = 7): T[] {
  const out = [...items];
  let state = seed;
  const random = () => {
    state = (state * 1_103_515_245 + 12_345) % 2_147_483_648;
    return state / 2_147_483_648;
  };
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

export async function sampleInputs(sql: Sql, size: number): Promise<Samples> {
  const users = await sql<{ id: number }[]>`
    select id from users tablesample bernoulli (5) repeatable (1) limit ${size}`;
  const scripts = await sql<{ id: number; user_id: number }[]>`
    select id, user_id from scripts tablesample bernoulli (1) repeatable (1) limit ${size}`;
  return {
    userIds: shuffled(users.map((u) => u.id)),
    scripts: shuffled(scripts.map((s) => ({ id: s.id, user_id: s.user_id }))),
  };
}
