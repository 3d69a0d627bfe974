/**
 * Runs (issue 9): a script with 100k runs. Its run history, keyset page 5,000 vs page 1
 * (target ≤ 1.2x), and reading the script (GET /scripts/{id}: its latest-run summary
 * is a column, not an aggregate over its runs) with 100k runs vs 1 run, side by side.
 * The 100k runs are inserted by one INSERT … SELECT (a few seconds).
 */
import { randomUUID } from 'node:crypto';
import { encodeCursor } from '../src/domain/paging.ts';
import type { BenchContext } from './context.ts';
import { type BenchResult, compareInterleaved } from './measure.ts';

const RUNS = 100_000;
const PER_PAGE = 20;
const DEPTH = 5_000;
const KEYSET_TARGET = 1.2;
const SUMMARY_TARGET = 1.1;

export async function runBenchmarks(ctx: BenchContext): Promise<BenchResult[]> {
  const { repos, sql } = ctx;
  const owner = ctx.samples.userIds[0];
  if (owner === undefined) throw new Error('no user to own the scripts');
  const newScript = () => {
    const name = `${randomUUID()}.py`;
    return repos.scripts.create({
      user_id: owner,
      filename: name,
      original_filename: 'busy.py',
      file_path: `bench/${name}`,
      file_size: 100,
      file_extension: '.py',
      sha256: 'ab'.repeat(32),
    });
  };
  const busy = await newScript();
  const quiet = await newScript();
  const started = performance.now();
  await sql`
    with runs as (
      insert into script_runs (script_id, user_id, status, script_sha256, exit_code, execution_time_seconds,
        queued_at, started_at, completed_at)
      select ${busy.id}, ${owner}, 'completed', ${busy.sha256}, 0, 1.5,
        now() - make_interval(mins => ${RUNS} - i), now() - make_interval(mins => ${RUNS} - i),
        now() - make_interval(mins => ${RUNS} - i) + interval '2 seconds'
      from generate_series(1, ${RUNS}) as i
      returning id
    )
    update scripts
    set last_run_id = (select max(id) from runs), run_count = ${RUNS}
    where id = ${busy.id}
  `;
  const one = await repos.runs.queue(quiet.id, { maxActive: 1_000_000 });
  await sql`analyze script_runs`;
  ctx.log(`  ${RUNS} runs of one script inserted in ${((performance.now() - started) / 1000).toFixed(1)} s`);

  const [last] = await sql<{ id: number }[]>`
    select id from script_runs where script_id = ${busy.id}
    order by id desc offset ${(DEPTH - 1) * PER_PAGE - 1} limit 1
  `;
  if (last === undefined) throw new Error('no run at that depth');
  const deep = encodeCursor(['run', last.id]);
  const filters = { script_id: busy.id, user_id: owner };
  const deepPage = await repos.runs.list(filters, deep, PER_PAGE);
  if (deepPage.items.length !== PER_PAGE) throw new Error(`page ${DEPTH} has ${deepPage.items.length} runs`);
  const history = await compareInterleaved(
    { label: 'page 1', run: () => repos.runs.list(filters, null, PER_PAGE) },
    { label: `page ${DEPTH}`, run: () => repos.runs.list(filters, deep, PER_PAGE) },
    ctx.fast,
  );
  const summary = await compareInterleaved(
    { label: '1 run', run: () => repos.scripts.getById(quiet.id, owner) },
    { label: `${RUNS} runs`, run: () => repos.scripts.getById(busy.id, owner) },
    ctx.fast,
  );
  await sql`delete from scripts where id in ${sql([busy.id, quiet.id])}`;
  return [
    {
      group: 'runs',
      operation: `a script's run history, keyset page ${DEPTH} vs page 1 (runs.list, ${RUNS} runs)`,
      baseline: history.baseline,
      ours: history.ours,
      ratio: history.ratio,
      ratioMeaning: 'time per call, deep page / page 1',
      target: `≤ ${KEYSET_TARGET.toFixed(1)}x`,
      met: history.ratio <= KEYSET_TARGET,
      notes: [`run ${one.id} is the other script's only run`],
    },
    {
      group: 'runs',
      operation: `GET /scripts/{id}'s read (scripts.getById) with ${RUNS} runs vs 1 run`,
      baseline: summary.baseline,
      ours: summary.ours,
      ratio: summary.ratio,
      ratioMeaning: 'time per call, 100k runs / 1 run',
      target: `≤ ${SUMMARY_TARGET.toFixed(2)}x`,
      met: summary.ratio <= SUMMARY_TARGET,
      notes: ['the latest-run summary is columns of the script row, kept by the statements that change runs'],
    },
  ];
}
