/** The results table (stdout) and bench/results/latest.json. */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { BenchResult, Side } from './measure.ts';

const RED = '\u001b[31;1m';
const GREEN = '\u001b[32m';
const RESET = '\u001b[0m';

const fmtNumber = (n: number) =>
  n >= 100 ? Math.round(n).toLocaleString('en-US') : n >= 10 ? n.toFixed(1) : n.toFixed(2);

const fmtMs = (ms: number) => (ms >= 100 ? ms.toFixed(0) : ms >= 1 ? ms.toFixed(1) : ms.toFixed(3));

export function formatSide(side: Side | null, unit = 'op/s'): string {
  if (side === null) return '—';
  const latency = Number.isFinite(side.p50Ms)
    ? ` · p50 ${fmtMs(side.p50Ms)} / p99 ${fmtMs(side.p99Ms)} ms`
    : '';
  const cpu = side.cpuUsPerOp === undefined ? '' : ` · CPU ${Math.round(side.cpuUsPerOp)} µs/op`;
  return `${fmtNumber(side.opsPerSec)} ${unit}${latency}${cpu}`;
}

function unitOf(r: BenchResult): string {
  if (r.group === 'http') return 'req/s';
  if (r.group === 'executor') return 'claims/s';
  if (r.group === 'load' || r.group === 'import') return 'rows/s';
  return 'op/s';
}

function formatRatio(r: BenchResult): string {
  if (r.ratio === null) return '—';
  if (r.group === 'statistics') return `${r.ratio.toFixed(0)}x faster`;
  if (r.group === 'search') return `${r.ratio.toFixed(0)}x faster`;
  return r.cpuRatio === undefined
    ? `${r.ratio.toFixed(2)}x`
    : `${r.ratio.toFixed(2)}x (CPU ${r.cpuRatio.toFixed(2)}x)`;
}

const verdict = (met: boolean | null) => (met === null ? 'info' : met ? 'MET' : 'MISSED');

/** A Markdown table (also readable in a terminal), misses in red when `color`. */
export function table(results: BenchResult[], color: boolean): string {
  const header = ['operation', 'baseline', 'ours', 'ratio', 'target', 'result'];
  const rows = results.map((r) => [
    r.operation,
    r.baseline ? `${r.baseline.label}: ${formatSide(r.baseline, unitOf(r))}` : '—',
    formatSide(r.ours, unitOf(r)),
    formatRatio(r),
    r.target || '—',
    verdict(r.met),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] as string).length)));
  const line = (cells: string[], paint = false, met: boolean | null = null) => {
    const text = `| ${cells.map((c, i) => c.padEnd(widths[i] as number)).join(' | ')} |`;
    if (!paint || !color || met === null) return text;
    return `${met ? GREEN : RED}${text}${RESET}`;
  };
  return [
    line(header),
    `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
    ...rows.map((row, i) => line(row, true, results[i]?.met ?? null)),
  ].join('\n');
}

/** The loud part: every missed target, with its notes. */
export function misses(results: BenchResult[], color: boolean): string {
  const missed = results.filter((r) => r.met === false);
  if (missed.length === 0) return 'All targets MET.';
  const lines = [
    `${color ? RED : ''}${'!'.repeat(72)}`,
    `!!! ${missed.length} TARGET${missed.length === 1 ? '' : 'S'} MISSED`,
    ...missed.map(
      (r) =>
        `!!!   ${r.operation}: ${formatRatio(r)} (target ${r.target})${r.notes?.length ? ` — ${r.notes.join('; ')}` : ''}`,
    ),
    `${'!'.repeat(72)}${color ? RESET : ''}`,
  ];
  return lines.join('\n');
}

export async function writeJson(file: string, report: object): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, `${JSON.stringify(report, null, 2)}\n`);
}
