/**
 * EXPLAIN of a statement as the app's pool runs it. With prepared statements
 * (DB_PREPARE=true, the default) the driver sends each statement as a named one,
 * and after five executions PostgreSQL may switch it to a generic plan, made
 * without the parameter values. EXPLAIN of the bare text shows the custom plan
 * only, so both are shown: `custom` (first execution) and `prepared` (the sixth).
 */
import type { Sql } from '../src/db/client.ts';

type PlanRow = { 'QUERY PLAN': string };

/** `text` uses $1..$n; `parameters` are as the driver serialised them. */
export async function explainBoth(
  sql: Sql,
  text: string,
  parameters: unknown[],
  settings: string[] = [],
): Promise<{ custom: string[]; prepared: string[] }> {
  const reserved = await sql.reserve();
  const args = parameters.map(literal).join(', ');
  const name = 'bench_explain';
  try {
    await reserved.unsafe('begin');
    for (const setting of settings) await reserved.unsafe(setting);
    await reserved.unsafe(`prepare ${name} as ${text}`);
    const custom = await reserved.unsafe<PlanRow[]>(`explain (analyze, buffers) execute ${name}(${args})`);
    for (let i = 0; i < 5; i++) await reserved.unsafe(`execute ${name}(${args})`);
    const prepared = await reserved.unsafe<PlanRow[]>(`explain (analyze, buffers) execute ${name}(${args})`);
    return { custom: lines(custom), prepared: lines(prepared) };
  } finally {
    await reserved.unsafe('rollback').catch(() => {});
    // PREPARE is not transactional.
    await reserved.unsafe(`deallocate ${name}`).catch(() => {});
    reserved.release();
  }
}

const lines = (rows: PlanRow[]) => rows.map((r) => r['QUERY PLAN']);

function literal(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  return `'${String(value).replace(/'/g, "''")}'`;
}
