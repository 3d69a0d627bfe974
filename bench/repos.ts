/**
 * A repository call vs the same SQL through a bare `postgres` call. The baseline
 * sends the exact statement text the repository sent (captured from the driver),
 * with the same parameters, on the same pool: what remains is the repository's
 * own cost (query building, the Database wrapper's timing, time limit, logging,
 * metrics and error mapping, and the shaping of rows). Target: ≤ 1.10x the time.
 */

import { likeContains } from '../src/repositories/pagination.js';
import { assertSameParameters, type BenchContext, captureQuery } from './context.js';
import { type BenchResult, compareInterleaved } from './measure.js';

export const REPOSITORY_TARGET = 1.1;

interface Case {
  operation: string;
  /** Ours: the repository call for input `i`. */
  ours: (i: number) => Promise<unknown>;
  /** The parameters the same statement takes for input `i`. */
  parameters: (i: number) => unknown[];
}

export async function repositoryBenchmarks(ctx: BenchContext, searchTerm: string): Promise<BenchResult[]> {
  const { repos, samples } = ctx;
  const userId = (i: number) => samples.userIds[i % samples.userIds.length] as number;
  const script = (i: number) =>
    samples.scripts[i % samples.scripts.length] as { id: number; user_id: number };
  const pattern = likeContains(searchTerm);
  const cases: Case[] = [
    {
      operation: 'users.findById',
      ours: (i) => repos.users.findById(userId(i)),
      parameters: (i) => [userId(i)],
    },
    {
      operation: 'scripts.getById (with owner)',
      ours: (i) => repos.scripts.getById(script(i).id, script(i).user_id),
      parameters: (i) => [script(i).id, script(i).user_id],
    },
    {
      operation: "scripts.listPage (a user's, page 1 of 20)",
      ours: (i) =>
        repos.scripts.listPage({ user_id: script(i).user_id }, '-created_at', { page: 1, per_page: 20 }),
      parameters: (i) => [script(i).user_id, script(i).user_id, 20, 0],
    },
    {
      operation: `users.search('${searchTerm}', 20)`,
      ours: () => repos.users.search(searchTerm, 20),
      parameters: () => [pattern, pattern, 20],
    },
  ];
  const results: BenchResult[] = [];
  for (const c of cases) {
    const captured = await captureQuery(ctx.sql, () => c.ours(0));
    assertSameParameters(c.operation, captured, c.parameters(0));
    const text = captured.text;
    ctx.log(`  ${c.operation}`);
    const { baseline, ours, ratio } = await compareInterleaved(
      {
        label: 'bare postgres',
        run: (i) => ctx.sql.unsafe(text, c.parameters(i) as never[], { prepare: true }),
      },
      { label: 'repository', run: c.ours },
      ctx.fast,
    );
    results.push({
      group: 'repository vs bare postgres',
      operation: c.operation,
      baseline,
      ours,
      ratio,
      ratioMeaning: 'time per call, ours / baseline (median of interleaved rounds)',
      target: `≤ ${REPOSITORY_TARGET.toFixed(2)}x`,
      met: ratio <= REPOSITORY_TARGET,
      notes: [`same statement: ${oneLine(text).slice(0, 160)}${text.length > 160 ? '…' : ''}`],
    });
  }
  return results;
}

export const oneLine = (text: string) => text.replace(/\s+/g, ' ').trim();
