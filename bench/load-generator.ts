/**
 * The HTTP benchmark's load generator: `wrk` (a C program, Debian package `wrk`) when it
 * is installed, else autocannon (Node, in this process). autocannon takes CPU from the
 * servers it measures on a 2-core machine; wrk takes far less, so its ratio is closer to
 * what the servers themselves cost. BENCH_LOAD_GENERATOR=autocannon forces the fallback.
 *
 * Also the CPU time a server process spends per request: utime + stime of its
 * /proc/<pid>/stat, read before and after a block, divided by the requests answered.
 */
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import autocannon from 'autocannon';
import { statFields } from '../src/proc.ts';

const run = promisify(execFile);

export interface LoadResult {
  /** 2xx answers. */
  ok: number;
  seconds: number;
  p50Ms: number;
  p99Ms: number;
  /** Errors, timeouts and non-2xx answers. */
  failures: number;
}

export interface LoadGenerator {
  name: 'wrk' | 'autocannon';
  load(
    url: string,
    headers: Record<string, string>,
    connections: number,
    seconds: number,
  ): Promise<LoadResult>;
}

function wrkInstalled(): boolean {
  try {
    execFileSync('wrk', ['--version'], { stdio: 'ignore' });
    return true;
  } catch (error) {
    // wrk --version exits 1 after printing its version; only a missing binary is ENOENT.
    return (error as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

/** wrk when installed (unless BENCH_LOAD_GENERATOR=autocannon), autocannon otherwise. */
export function pickLoadGenerator(): LoadGenerator {
  const forced = process.env.BENCH_LOAD_GENERATOR;
  if (forced !== 'autocannon' && wrkInstalled()) return wrk;
  return autocannonGenerator;
}

const wrk: LoadGenerator = {
  name: 'wrk',
  async load(url, headers, connections, seconds) {
    const threads = Number(process.env.BENCH_WRK_THREADS ?? 1);
    const args = [
      '-t',
      String(threads),
      '-c',
      String(connections),
      '-d',
      `${seconds}s`,
      '--latency',
      '--timeout',
      '10s',
    ];
    for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
    const { stdout } = await run('wrk', [...args, url], { maxBuffer: 1 << 20 });
    return parseWrk(stdout);
  },
};

/** Reads wrk's summary (requests, duration, latency percentiles, errors, non-2xx). */
export function parseWrk(out: string): LoadResult {
  const total = out.match(/(\d+) requests in ([\d.]+)(us|ms|s|m)/);
  if (total === null) throw new Error(`unexpected wrk output:\n${out}`);
  const unit = { us: 1e-6, ms: 1e-3, s: 1, m: 60 }[total[3] as 'us' | 'ms' | 's' | 'm'];
  const ms = (label: string) => {
    const m = out.match(new RegExp(`^\\s*${label}%\\s+([\\d.]+)(us|ms|s)`, 'm'));
    if (m === null) return Number.NaN;
    return Number(m[1]) * { us: 1e-3, ms: 1, s: 1000 }[m[2] as 'us' | 'ms' | 's'];
  };
  const non2xx = Number(out.match(/Non-2xx or 3xx responses: (\d+)/)?.[1] ?? 0);
  const socket = out.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/);
  const errors = socket === null ? 0 : socket.slice(1).reduce((n, x) => n + Number(x), 0);
  return {
    ok: Number(total[1]) - non2xx,
    seconds: Number(total[2]) * unit,
    p50Ms: ms('50'),
    p99Ms: ms('99'),
    failures: non2xx + errors,
  };
}

const autocannonGenerator: LoadGenerator = {
  name: 'autocannon',
  async load(url, headers, connections, seconds) {
    const r = await autocannon({ url, headers, connections, duration: seconds, timeout: 10 });
    return {
      ok: r['2xx'],
      seconds: r.duration,
      p50Ms: r.latency.p50,
      p99Ms: r.latency.p99,
      failures: r.errors + r.non2xx + r.timeouts,
    };
  },
};

let ticks: number | undefined;

/** CPU seconds (user + system) the process has used so far; NaN when it cannot be read. */
export async function cpuSeconds(pid: number | undefined): Promise<number> {
  if (pid === undefined) return Number.NaN;
  const fields = await statFields(pid);
  if (fields === null) return Number.NaN;
  ticks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  // utime and stime are fields 14 and 15 of proc(5): indexes 11 and 12 after the name.
  return (Number(fields[11]) + Number(fields[12])) / ticks;
}
