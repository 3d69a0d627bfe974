/**
 * What the sandbox costs a run (issue 10): `print('hi')` run the way the executor
 * runs a claimed script — scratch folder and copy of the script, the run's
 * sandbox (cgroup, namespaces, command line), the spawn, its output, its end and
 * clean-up — with every protection this host offers, and with SCRIPT_SANDBOX=off
 * (a uid and rlimits only: the executor before sandbox v2). Interleaved in rounds
 * (A B, B A, …) so that the machine's moods hit both alike. Measured:
 * - claim to first output line: from "the claim is in hand" to the first bytes of stdout;
 * - the whole run: to its recorded measurements and its folder removed.
 * The database is left out (it is the same for both). Target: under 50 ms more.
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { pino } from 'pino';
import { loadConfig } from '../src/config.ts';
import { startRun } from '../src/executor/child-process.ts';
import { prepareWorkspace } from '../src/executor/run-workspace.ts';
import { Sandbox } from '../src/executor/sandbox/index.ts';
import { UidPool } from '../src/executor/uid-pool.ts';
import { type BenchResult, quantile, type Side } from './measure.ts';

export const SANDBOX_OVERHEAD_TARGET_MS = 50;
const RUNS_PER_BLOCK = 5;

interface Variant {
  label: string;
  sandbox: Sandbox;
  first: number[];
  total: number[];
}

export async function sandboxBenchmarks(log: (line: string) => void, rounds: number): Promise<BenchResult[]> {
  if (process.getuid?.() !== 0) {
    log('  skipped: the sandbox needs root (runs get uids, namespaces and cgroups of their own)');
    return [];
  }
  const base = await mkdtemp(path.join(tmpdir(), 'dollarclub-bench-sandbox-'));
  // Runs enter their scratch folder inside it, as inside an executor's folder.
  await chmod(base, 0o711);
  // SCRIPT_SANDBOX=off warns loudly, as it should; not in the middle of the table.
  const quiet = pino({ level: 'error' });
  const config = (sandbox: string) =>
    loadConfig({ NODE_ENV: 'test', SCRIPT_SANDBOX: sandbox, EXECUTOR_WORK_DIR: path.join(base, 'runs') });
  const lockDir = path.join(base, 'locks');
  const pool = await UidPool.acquire({
    baseUid: 3_000_200_000,
    baseGid: 3_000_200_000,
    count: 1,
    executorId: 'bench',
    lockDir,
  });
  const [user] = pool.users;
  const variants: Variant[] = [];
  try {
    for (const [label, mode] of [
      ['SCRIPT_SANDBOX=off (uid + rlimits)', 'off'],
      ['sandboxed (every protection of this host)', 'auto'],
    ] as const) {
      const sandbox = await Sandbox.open({
        config: config(mode),
        log: quiet,
        processUid: 0,
        users: pool.users,
      });
      variants.push({ label, sandbox, first: [], total: [] });
    }
    const [off, on] = variants as [Variant, Variant];
    log(`  protections: ${JSON.stringify(on.sandbox.protections)}`);
    const once = async (variant: Variant, into: boolean) => {
      const claimed = performance.now();
      const workspace = await prepareWorkspace({
        root: base,
        scriptId: 1,
        source: Readable.from([Buffer.from("print('hi')\n")]),
        extension: '.py',
        user,
      });
      const confinement = await variant.sandbox.confine({
        name: path.basename(workspace.dir),
        scratchDir: workspace.dir,
        entry: workspace.entry,
        user,
        env: { PATH: '/usr/bin:/bin', HOME: workspace.dir, PYTHONUNBUFFERED: '1' },
        command: ['/usr/bin/python3', '-I', '-u', workspace.entry],
        limits: {
          addressSpaceBytes: 512 << 20,
          cpuSeconds: 30,
          maxProcesses: 64,
          maxOpenFiles: 256,
          maxFileBytes: 1 << 20,
        },
      });
      let first: number | undefined;
      const handle = startRun({
        confinement,
        cwd: workspace.dir,
        timeoutMs: 30_000,
        statsFile: workspace.statsFile,
        onOutput: () => {
          first ??= performance.now();
        },
      });
      const outcome = await handle.done;
      await workspace.remove();
      const done = performance.now();
      if (outcome.exitCode !== 0)
        throw new Error(`print('hi') failed in ${variant.label}: ${JSON.stringify(outcome)}`);
      if (into) {
        variant.first.push((first ?? done) - claimed);
        variant.total.push(done - claimed);
      }
    };
    for (const variant of variants) for (let i = 0; i < 2; i++) await once(variant, false);
    for (let round = 0; round < rounds; round++) {
      for (const variant of round % 2 === 0 ? [off, on] : [on, off])
        for (let i = 0; i < RUNS_PER_BLOCK; i++) await once(variant, true);
    }
    return [row('claim to first output line', off, on, 'first'), row("print('hi') run", off, on, 'total')];
  } finally {
    for (const variant of variants) await variant.sandbox.close();
    await pool.release();
    await rm(base, { recursive: true, force: true });
  }
}

function row(operation: string, off: Variant, on: Variant, which: 'first' | 'total'): BenchResult {
  const a = side(off.label, off[which]);
  const b = side(on.label, on[which]);
  const more = b.p50Ms - a.p50Ms;
  return {
    group: 'sandbox',
    operation: `${operation}, sandboxed vs not`,
    baseline: a,
    ours: b,
    ratio: b.p50Ms / a.p50Ms,
    ratioMeaning: 'median time sandboxed / not (ops/s column: runs per second, one at a time)',
    target: `< ${SANDBOX_OVERHEAD_TARGET_MS} ms more`,
    met: more < SANDBOX_OVERHEAD_TARGET_MS,
    notes: [
      `median ${more.toFixed(1)} ms more with the sandbox (${b.p50Ms.toFixed(1)} vs ${a.p50Ms.toFixed(1)} ms)`,
    ],
  };
}

function side(label: string, ms: number[]): Side {
  const sorted = Float64Array.from(ms).sort();
  const total = ms.reduce((s, x) => s + x, 0);
  return {
    label,
    opsPerSec: total === 0 ? 0 : (ms.length * 1000) / total,
    p50Ms: quantile(sorted, 0.5),
    p99Ms: quantile(sorted, 0.99),
    count: ms.length,
  };
}
