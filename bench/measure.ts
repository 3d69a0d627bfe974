/**
 * Interleaved measurement: a baseline and our variant run in alternating blocks
 * (A B, B A, A B, ... after a warm-up of each), so that whatever the shared
 * machine does at a given moment hits both alike. The ratio is the median of the
 * per-round ratios of mean time per call, which one noisy block cannot move much.
 */
import { performance } from 'node:perf_hooks';

/** One side of a comparison, as reported. */
export interface Side {
  label: string;
  /** Calls (or requests, rows, claims) per second over all measured blocks. */
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  /** How many calls were measured. */
  count: number;
  /** Client CPU time (process.cpuUsage, user + system) per call, in µs, where measured. */
  cpuUsPerOp?: number;
}

/** One row of the results table. */
export interface BenchResult {
  group: string;
  operation: string;
  baseline: Side | null;
  ours: Side;
  /** See `ratioMeaning`; null when the row has no ratio. */
  ratio: number | null;
  /** Client CPU per call, ours / baseline, where measured. */
  cpuRatio?: number;
  ratioMeaning: string;
  /** Human-readable target, e.g. "≤ 1.10x"; empty when informational. */
  target: string;
  /** null: informational, no target. */
  met: boolean | null;
  notes?: string[];
}

export interface Variant {
  label: string;
  /** One call; `i` counts the calls of this variant, so both sides can walk the same inputs. */
  run: (i: number) => Promise<unknown>;
}

export interface CompareOptions {
  rounds: number;
  /** Each block runs calls for about this long (at least `minCalls`). */
  blockMs: number;
  minCalls?: number;
  warmupMs: number;
}

interface Samples {
  latencies: number[];
  totalMs: number;
  calls: number;
  /** Mean ms per call of each round's block. */
  blockMeans: number[];
}

/** Runs `a` (the baseline) and `b` (ours) interleaved; `ratio` is time(b) / time(a). */
export async function compareInterleaved(
  a: Variant,
  b: Variant,
  options: CompareOptions,
): Promise<{ baseline: Side; ours: Side; ratio: number }> {
  const minCalls = options.minCalls ?? 3;
  const counters = [0, 0];
  const samples: [Samples, Samples] = [emptySamples(), emptySamples()];
  const variants = [a, b] as const;
  for (const which of [0, 1] as const) {
    await block(variants[which], counters, which, options.warmupMs, minCalls, null);
  }
  for (let round = 0; round < options.rounds; round++) {
    const order = round % 2 === 0 ? ([0, 1] as const) : ([1, 0] as const);
    for (const which of order)
      await block(variants[which], counters, which, options.blockMs, minCalls, samples[which]);
  }
  const ratios = samples[1].blockMeans.map((mean, i) => mean / (samples[0].blockMeans[i] as number));
  return { baseline: side(a.label, samples[0]), ours: side(b.label, samples[1]), ratio: median(ratios) };
}

/** Times `calls` sequential calls of one operation (no baseline). */
export async function timeCalls(
  label: string,
  run: (i: number) => Promise<unknown>,
  calls: number,
  warmup = 1,
): Promise<Side> {
  for (let i = 0; i < warmup; i++) await run(i);
  const s = emptySamples();
  for (let i = 0; i < calls; i++) {
    const start = performance.now();
    await run(i);
    const ms = performance.now() - start;
    s.latencies.push(ms);
    s.totalMs += ms;
    s.calls++;
  }
  return side(label, s);
}

async function block(
  variant: Variant,
  counters: number[],
  which: 0 | 1,
  ms: number,
  minCalls: number,
  into: Samples | null,
): Promise<void> {
  const blockStart = performance.now();
  let calls = 0;
  let total = 0;
  while (calls < minCalls || performance.now() - blockStart < ms) {
    const i = counters[which]!++;
    const start = performance.now();
    await variant.run(i);
    const elapsed = performance.now() - start;
    calls++;
    total += elapsed;
    into?.latencies.push(elapsed);
  }
  if (into) {
    into.totalMs += total;
    into.calls += calls;
    into.blockMeans.push(total / calls);
  }
}

function emptySamples(): Samples {
  return { latencies: [], totalMs: 0, calls: 0, blockMeans: [] };
}

function side(label: string, s: Samples): Side {
  const sorted = Float64Array.from(s.latencies).sort();
  return {
    label,
    opsPerSec: s.totalMs === 0 ? 0 : (s.calls * 1000) / s.totalMs,
    p50Ms: quantile(sorted, 0.5),
    p99Ms: quantile(sorted, 0.99),
    count: s.calls,
  };
}

/** The q-quantile of sorted values (nearest rank). */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[index] as number;
}

export function median(values: number[]): number {
  return quantile(Float64Array.from(values).sort(), 0.5);
}

/** A promise that resolves after `ms`. */
export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
