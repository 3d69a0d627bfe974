/**
 * One run's sandbox as the runner uses it: its command line (made by index.ts), and
 * the watch over its totals — the kernel's through its cgroup, else the watchdog's
 * sums over /proc — with the kill and the measurements at its end.
 */
import type { SandboxUser } from '../process-group.ts';
import type { RunCgroup } from './run-cgroup.ts';
import { sample } from './watchdog.ts';

/** Why the sandbox killed a run: its total memory or CPU time crossed the limit. */
export type LimitReason = 'memory' | 'cpu';

export interface Measurements {
  /** The run's peak total (cgroup peak, or the watchdog's largest sum); null: not measured. */
  peakMemoryMb: number | null;
  /** CPU time of all the run's processes; null: not measured here (GNU time's is used). */
  cpuSeconds: number | null;
  /** The kernel killed a process of the run at its memory total. */
  memoryExceeded: boolean;
}

/** One run's sandbox, as the runner uses it. */
export interface Confinement {
  /** Everything between GNU time and the script (see command.ts). */
  argv: string[];
  /** bubblewrap reports a death by signal N as exit code 128 + N. */
  signalAsExitCode: boolean;
  /**
   * The run's totals (peak memory, CPU time) are the kernel's (a cgroup): GNU time, which
   * would only measure the same less well, is left out of the chain (one program less).
   */
  measuresItself: boolean;
  /** Starts watching the run's totals; `kill` ends the run when one crosses its limit. */
  watch(pgid: number, kill: (reason: LimitReason) => void): void;
  /** SIGKILL to every process of the run (with a cgroup: whatever left the process group). */
  kill(): Promise<void>;
  /** Stops watching, reads the totals, removes the cgroup. Idempotent. */
  finish(): Promise<Measurements>;
}

const WATCH_MS = 250;

export class RunConfinement implements Confinement {
  private timer: NodeJS.Timeout | undefined;
  private peakBytes = 0;
  private cpuSeconds = 0;
  private finished: Promise<Measurements> | undefined;
  private pgid: number | undefined;
  readonly measuresItself: boolean;
  /** The cgroup's removal, once the run ended. */
  removal: Promise<void> | undefined;

  readonly signalAsExitCode: boolean;
  readonly argv: string[];
  private readonly cgroup: RunCgroup | null;
  private readonly limits: { user?: SandboxUser; memoryBytes: number; cpuSeconds: number };
  /** Called once nothing of the run is left (its cgroup removed). */
  private readonly gone: () => void;

  constructor(
    signalAsExitCode: boolean,
    argv: string[],
    cgroup: RunCgroup | null,
    limits: { user?: SandboxUser; memoryBytes: number; cpuSeconds: number },
    gone: () => void,
  ) {
    this.signalAsExitCode = signalAsExitCode;
    this.argv = argv;
    this.cgroup = cgroup;
    this.limits = limits;
    this.gone = gone;
    this.measuresItself = cgroup !== null;
  }

  watch(pgid: number, kill: (reason: LimitReason) => void): void {
    this.pgid = pgid;
    let busy = false;
    this.timer = setInterval(() => {
      if (busy) return;
      busy = true;
      void this.look()
        .then((over) => {
          if (over) kill(over);
        })
        .catch(() => {})
        .finally(() => {
          busy = false;
        });
    }, WATCH_MS);
    this.timer.unref();
  }

  async kill(): Promise<void> {
    await this.cgroup?.kill();
  }

  finish(): Promise<Measurements> {
    this.finished ??= (async () => {
      clearInterval(this.timer);
      if (this.cgroup === null) {
        this.gone();
        return {
          peakMemoryMb: this.peakBytes > 0 ? this.peakBytes / 1024 / 1024 : null,
          cpuSeconds: this.cpuSeconds > 0 ? this.cpuSeconds : null,
          memoryExceeded: false,
        };
      }
      const usage = await this.cgroup.usage();
      // The measurements are what the run waits for; the cgroup goes meanwhile (the
      // executor's close awaits it).
      this.removal = this.cgroup
        .kill()
        .then(() => this.cgroup?.remove())
        .then(() => {})
        .finally(this.gone);
      return {
        peakMemoryMb: usage.peakBytes === null ? null : usage.peakBytes / 1024 / 1024,
        cpuSeconds: usage.cpuSeconds,
        memoryExceeded: usage.oomKills > 0,
      };
    })();
    return this.finished;
  }

  /** One look at the totals: the limit crossed, if any. */
  private async look(): Promise<LimitReason | null> {
    if (this.cgroup !== null) {
      const usage = await this.cgroup.usage();
      // The kernel already killed one process at the limit; the run goes with it.
      if (usage.oomKills > 0) return 'memory';
      if (usage.cpuSeconds !== null && usage.cpuSeconds > this.limits.cpuSeconds) return 'cpu';
      return null;
    }
    const now = await sample(this.limits.user ? { uid: this.limits.user.uid } : { pgid: this.pgid });
    this.peakBytes = Math.max(this.peakBytes, now.bytes);
    this.cpuSeconds = Math.max(this.cpuSeconds, now.cpuSeconds);
    if (now.bytes > this.limits.memoryBytes) return 'memory';
    if (now.cpuSeconds > this.limits.cpuSeconds) return 'cpu';
    return null;
  }
}
