/**
 * What a run's script is started with: its command line (interpreter and flags by
 * extension), its whole environment, and its address-space limit, which for Node
 * must allow for what V8 reserves up front (measured once per NODE_BIN).
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Config } from '../config.ts';
import type { ScriptExtension } from '../domain/script.ts';

const execFileAsync = promisify(execFile);

/** Exactly what a script sees: no database URL, no keys, no IBKR tokens. */
export function scriptEnv(dir: string, scriptId: number, runId: number): Record<string, string> {
  return {
    PATH: '/usr/local/bin:/usr/bin:/bin',
    HOME: dir,
    TMPDIR: dir,
    LANG: 'C.UTF-8',
    LC_ALL: 'C.UTF-8',
    PYTHONUNBUFFERED: '1',
    PYTHONDONTWRITEBYTECODE: '1',
    DOLLARCLUB_SCRIPT_ID: String(scriptId),
    DOLLARCLUB_RUN_ID: String(runId),
  };
}

/**
 * Python runs isolated from its environment (-I) and unbuffered (-u). Node's heap
 * is capped at SCRIPT_MEMORY_MB; V8 reserves far more address space than it uses.
 */
export function commandFor(extension: ScriptExtension, entry: string, config: Config): string[] {
  if (extension === '.py') return [config.PYTHON_BIN, '-I', '-u', entry];
  return [config.NODE_BIN, `--max-old-space-size=${config.SCRIPT_MEMORY_MB}`, entry];
}

/**
 * RLIMIT_AS is the memory limit of a Python run. V8 reserves address space before
 * running a line (about 700 MB on Node 20, 1.3 GB on Node 24), so a Node run gets
 * SCRIPT_MEMORY_MB plus what this Node reserves — measured once when the executor
 * starts (`measureNodeReserve`), off the event loop — plus a margin; its heap limit
 * and the run's memory total (cgroup) do the real limiting.
 */
const v8Reserved = new Map<string, number>();
const V8_MARGIN_MB = 256;
/** Unmeasured (NODE_BIN did not answer): enough for every Node release line we run on. */
const V8_RESERVED_FALLBACK_MB = 2048;

/** Measures the address space NODE_BIN reserves at start (its VmPeak running nothing). */
export async function measureNodeReserve(nodeBin: string): Promise<number> {
  let reserved = V8_RESERVED_FALLBACK_MB;
  try {
    const { stdout } = await execFileAsync(
      nodeBin,
      [
        '-e',
        "process.stdout.write(/VmPeak:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status','utf8'))[1])",
      ],
      { encoding: 'utf8', timeout: 30_000, env: { PATH: '/usr/bin:/bin' } },
    );
    const measured = Math.ceil(Number(stdout) / 1024) + V8_MARGIN_MB;
    if (Number.isFinite(measured)) reserved = Math.max(1024, measured);
  } catch {
    // Not measurable here: the fallback; a run will say what is wrong with NODE_BIN.
  }
  v8Reserved.set(nodeBin, reserved);
  return reserved;
}

export function addressSpaceLimitMb(extension: ScriptExtension, config: Config): number {
  return extension === '.py'
    ? config.SCRIPT_MEMORY_MB
    : config.SCRIPT_MEMORY_MB + (v8Reserved.get(config.NODE_BIN) ?? V8_RESERVED_FALLBACK_MB);
}
