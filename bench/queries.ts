/**
 * The query-shape benchmarks: keyset pagination at depth vs page 1 (and offset
 * pagination for contrast), trigram substring search vs a forced sequential
 * scan (with both plans). The statistics are in stats.ts.
 */
import { performance } from 'node:perf_hooks';
import { encodeCursor } from '../src/domain/paging.ts';
import { likeContains } from '../src/repositories/rows.ts';
import { type BenchContext, captureQuery } from './context.ts';
import { explainBoth } from './explain.ts';
import { type BenchResult, compareInterleaved } from './measure.ts';

export const KEYSET_TARGET = 1.2;
export const SEARCH_TARGET = 20;
const PER_PAGE = 20;

export async function paginationBenchmarks(ctx: BenchContext): Promise<BenchResult[]> {
  const { repos } = ctx;
  const [{ count } = { count: 0 }] = await ctx.sql<
    { count: number }[]
  >`select count(*) as count from scripts`;
  // Page 5,000 of 20 at full scale; deep enough to stay inside a smaller data set.
  const depth = Math.max(2, Math.min(5_000, Math.floor((count * 0.9) / PER_PAGE)));
  const results: BenchResult[] = [];
  const keysetCursors = new Map<string, string | null>();
  for (const sort of ['-created_at', '-execution_time_seconds'] as const) {
    const indexed = sort === '-created_at';
    // Everyone's scripts (the admin listing): the only list that is 100k rows deep.
    let cursor: string | null = null;
    const walkStart = performance.now();
    if (indexed) {
      for (let page = 1; page < depth; page++) {
        const next: { next_cursor: string | null } = await repos.scriptListings.listAfter(
          {},
          sort,
          cursor,
          PER_PAGE,
        );
        if (next.next_cursor === null) throw new Error(`the keyset walk ended early, at page ${page}`);
        cursor = next.next_cursor;
      }
    } else {
      // Unindexed: every page sorts the whole table, so walking 5,000 pages would take
      // an hour. The cursor of the last row before page `depth`, as listAfter makes it.
      const [last] = await ctx.sql<{ key: number; id: number }[]>`
        select coalesce(execution_time_seconds, -1) as key, id
        from scripts
        order by coalesce(execution_time_seconds, -1) desc, id desc
        offset ${(depth - 1) * PER_PAGE - 1} limit 1`;
      if (last === undefined) throw new Error('no row at that depth');
      cursor = encodeCursor([sort, last.key, last.id]);
    }
    const walkMs = performance.now() - walkStart;
    if (indexed)
      ctx.log(`  keyset ${sort}: followed ${depth - 1} cursors in ${(walkMs / 1000).toFixed(1)} s`);
    const deep = cursor;
    keysetCursors.set(sort, deep);
    const { baseline, ours, ratio } = await compareInterleaved(
      { label: 'page 1', run: () => repos.scriptListings.listAfter({}, sort, null, PER_PAGE) },
      { label: `page ${depth}`, run: () => repos.scriptListings.listAfter({}, sort, deep, PER_PAGE) },
      sort === '-created_at' ? ctx.fast : ctx.slow,
    );
    results.push({
      group: 'pagination',
      operation: `keyset page ${depth} vs page 1 (scripts.listAfter, all scripts, ${sort})`,
      baseline,
      ours,
      ratio,
      ratioMeaning: 'time per call, deep page / page 1',
      target: indexed ? `≤ ${KEYSET_TARGET.toFixed(1)}x` : '',
      met: indexed ? ratio <= KEYSET_TARGET : null,
      notes: [
        ...(indexed
          ? [`walking ${depth - 1} cursors took ${(walkMs / (depth - 1)).toFixed(2)} ms per page on average`]
          : [
              'informational: this sort has no index, so every page (page 1 included) sorts all scripts; ' +
                'compare its page-1 latency with the created_at one',
            ]),
      ],
    });
  }
  // The same two statements through bare postgres: what the database alone does at depth.
  const createdDeep = keysetCursors.get('-created_at');
  if (createdDeep !== undefined) {
    const first = await captureQuery(ctx.sql, () =>
      repos.scriptListings.listAfter({}, '-created_at', null, PER_PAGE),
    );
    const deep = await captureQuery(ctx.sql, () =>
      repos.scriptListings.listAfter({}, '-created_at', createdDeep, PER_PAGE),
    );
    const run = (q: { text: string; parameters: unknown[] }) => () =>
      ctx.sql.unsafe(q.text, q.parameters as never[], { prepare: true });
    const bare = await compareInterleaved(
      { label: 'page 1', run: run(first) },
      { label: `page ${depth}`, run: run(deep) },
      ctx.fast,
    );
    results.push({
      group: 'pagination',
      operation: `keyset page ${depth} vs page 1 (the same statements, bare postgres, -created_at)`,
      ...bare,
      ratioMeaning: 'time per call, deep page / page 1',
      target: '',
      met: null,
      notes: ["the database's share of the keyset ratio above"],
    });
  }
  ctx.log(`  offset page ${depth} vs page 1`);
  const offset = await compareInterleaved(
    {
      label: 'page 1',
      run: () => repos.scriptListings.listPage({}, '-created_at', { page: 1, per_page: PER_PAGE }),
    },
    {
      label: `page ${depth}`,
      run: () => repos.scriptListings.listPage({}, '-created_at', { page: depth, per_page: PER_PAGE }),
    },
    ctx.slow,
  );
  results.push({
    group: 'pagination',
    operation: `offset page ${depth} vs page 1 (scripts.listPage, all scripts, with total)`,
    ...offset,
    ratioMeaning: 'time per call, deep page / page 1',
    target: '',
    met: null,
    notes: ['for contrast; both pages also count every script for `total`'],
  });
  const offsetSql = (offsetRows: number) => () =>
    ctx.sql`select * from scripts order by created_at desc, id desc limit ${PER_PAGE} offset ${offsetRows}`;
  const bare = await compareInterleaved(
    { label: 'offset 0', run: offsetSql(0) },
    { label: `offset ${(depth - 1) * PER_PAGE}`, run: offsetSql((depth - 1) * PER_PAGE) },
    ctx.slow,
  );
  results.push({
    group: 'pagination',
    operation: `offset page ${depth} vs page 1 (bare SQL, no total)`,
    ...bare,
    ratioMeaning: 'time per call, deep page / page 1',
    target: '',
    met: null,
    notes: ['for contrast: what keyset pagination avoids'],
  });
  return results;
}

export interface SearchReport {
  result: BenchResult;
  /** custom: the plan for these values; prepared: the statement's plan after 5 executions. */
  plans: { custom: string[]; prepared: string[]; sequential: string[] };
}

/** users.search vs the same call with index and bitmap scans turned off. */
export async function searchBenchmark(ctx: BenchContext, term: string): Promise<SearchReport> {
  const { repos } = ctx;
  const { text, parameters } = await captureQuery(ctx.sql, () => repos.userListings.search(term, 20));
  const indexed = await explainBoth(ctx.sql, text, parameters);
  const sequential = await explainBoth(ctx.sql, text, parameters, [
    'set local enable_bitmapscan = off',
    'set local enable_indexscan = off',
  ]);
  const [{ matches } = { matches: 0 }] = await ctx.sql<{ matches: number }[]>`
    select count(*) as matches from users where email ilike ${likeContains(term)} or username ilike ${likeContains(term)}`;
  const { baseline, ours } = await compareInterleaved(
    {
      label: 'sequential scan',
      // Its own statement text (a comment), so its plans never land in the prepared
      // statement the indexed side uses: a generic plan made with index scans off
      // would otherwise be reused after the transaction.
      run: () =>
        ctx.sql.begin(async (tx) => {
          await tx`set local enable_bitmapscan = off`;
          await tx`set local enable_indexscan = off`;
          return tx.unsafe(`${text} -- sequential`, parameters as never[], { prepare: true });
        }),
    },
    { label: 'trigram index', run: () => repos.userListings.search(term, 20) },
    ctx.slow,
  );
  // The speed-up from the medians: each side is stable enough, and the index side is sub-millisecond.
  const speedup = baseline.p50Ms / ours.p50Ms;
  return {
    result: {
      group: 'search',
      operation: `users.search('${term}', 20) vs sequential scan (${matches} matching users)`,
      baseline,
      ours,
      ratio: speedup,
      ratioMeaning: 'speed-up, p50 sequential / p50 indexed',
      target: `≥ ${SEARCH_TARGET}x faster`,
      met: speedup >= SEARCH_TARGET,
    },
    plans: { custom: indexed.custom, prepared: indexed.prepared, sequential: sequential.prepared },
  };
}
