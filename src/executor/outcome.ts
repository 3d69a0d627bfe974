/**
 * From what a run's process did to what is recorded about it: the verdict (which
 * statement, which message, which metrics label), and the write itself, retried
 * while the database is unavailable and never left undone for a bad value.
 */
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import { DatabaseUnavailableError, InvalidStateError } from '../domain/errors.ts';
import type { RunOutcomeRepository, RunResult } from '../repositories/run-outcomes.ts';
import type { PendingChunk } from '../repositories/run-output.ts';
import type { RunOutcome } from './child-process.ts';

export type RecordKind = 'complete' | 'fail' | 'cancelled';

export interface Verdict {
  kind: RecordKind;
  message: string;
  /** The `outcome` label of script_runs_total. */
  label: string;
}

/** `started` is false for a run killed before its process was started. */
export function verdictOf(outcome: RunOutcome, stderrTail: string, config: Config, started = true): Verdict {
  switch (outcome.killed) {
    case 'cancelled':
      return { kind: 'cancelled', message: '', label: 'cancelled' };
    case 'lost':
      // Cancelled, deleted, or failed by another executor: only a cancelled row takes our record.
      return { kind: 'cancelled', message: '', label: 'lost' };
    case 'fenced':
      return {
        kind: 'fail',
        message:
          `the executor could not renew its lease (the database did not answer) and ${started ? 'killed the script' : 'did not start the script'} ` +
          'rather than let it run unwatched',
        label: 'lost',
      };
    case 'timeout':
      return {
        kind: 'fail',
        message: `timed out after ${config.MAX_EXECUTION_SECONDS} s; the script and its processes were killed`,
        label: 'timeout',
      };
    case 'memory':
      return {
        kind: 'fail',
        message:
          `killed: the run's processes together reached its memory limit of ${config.SCRIPT_MEMORY_MB} MB` +
          (outcome.peakMemoryMb === null ? '' : ` (peak ${Math.round(outcome.peakMemoryMb)} MB)`),
        label: 'failed',
      };
    case 'cpu':
      return {
        kind: 'fail',
        message: `killed: the run's processes together used its CPU time limit of ${config.SCRIPT_CPU_SECONDS} s`,
        label: 'failed',
      };
    case 'shutdown':
      return {
        kind: 'fail',
        message: started
          ? 'the executor shut down before the script finished; it was killed'
          : 'the executor shut down before the script started; it did not run',
        label: 'shutdown',
      };
  }
  if (outcome.exitCode === 0 && outcome.signal === null)
    return { kind: 'complete', message: '', label: 'completed' };
  return { kind: 'fail', message: failureMessage(outcome, stderrTail, config), label: 'failed' };
}

function failureMessage(outcome: RunOutcome, stderrTail: string, config: Config): string {
  const lastLine = stderrTail.trim().split('\n').at(-1)?.trim().slice(0, 300) ?? '';
  const because = lastLine ? `: ${lastLine}` : '';
  if (
    outcome.signal === 'SIGXCPU' ||
    (outcome.signal === 'SIGKILL' && outcome.wallSeconds >= config.SCRIPT_CPU_SECONDS)
  )
    return `killed by ${outcome.signal}: CPU time limit of ${config.SCRIPT_CPU_SECONDS} s reached`;
  if (outcome.signal) return `killed by ${outcome.signal}${because}`;
  if (/MemoryError|heap out of memory|Cannot allocate memory/.test(stderrTail))
    return `exited with code ${outcome.exitCode}: out of memory (limit ${config.SCRIPT_MEMORY_MB} MB)${because}`;
  return `exited with code ${outcome.exitCode}${because}`;
}

/** Writes runs' outcomes for one executor; every write is guarded by its id. */
export class Recorder {
  private readonly outcomes: RunOutcomeRepository;
  private readonly executorId: string;
  private readonly leaseSeconds: number;
  private readonly log: Logger;

  constructor(outcomes: RunOutcomeRepository, executorId: string, leaseSeconds: number, log: Logger) {
    this.outcomes = outcomes;
    this.executorId = executorId;
    this.leaseSeconds = leaseSeconds;
    this.log = log;
  }

  /**
   * Writes a run's outcome, retrying while the database is unavailable (within the
   * lease: after that another executor fails the run, and our late write is a no-op).
   * `unwritten` is output the sink could not store (numbered batches, stored at most
   * once); it goes in with every outcome. True when the row took the record.
   */
  async record(
    id: number,
    kind: RecordKind,
    result: RunResult,
    message = '',
    unwritten: readonly PendingChunk[] = [],
  ): Promise<boolean> {
    const { outcomes, executorId } = this;
    const deadline = Date.now() + this.leaseSeconds * 1000;
    for (let attempt = 0; ; attempt++) {
      try {
        if (kind === 'complete') await outcomes.complete(id, result, executorId, unwritten);
        else if (kind === 'fail') await outcomes.fail(id, message, result, executorId, unwritten);
        else return await outcomes.recordCancelledRun(id, executorId, result, unwritten);
        return true;
      } catch (err) {
        if (err instanceof InvalidStateError) {
          // Cancelled (or recovered) between the end of the process and this write:
          // the measurements still belong to a cancelled run of ours, if it is one.
          return outcomes.recordCancelledRun(id, executorId, result, unwritten).catch(() => false);
        }
        if (err instanceof DatabaseUnavailableError) {
          if (Date.now() > deadline) {
            this.log.error({ err, run_id: id }, 'could not record the outcome of a run');
            return false;
          }
          await new Promise((resolve) => setTimeout(resolve, Math.min(500 * 2 ** attempt, 5000)));
          continue;
        }
        // A value the database refused: the run must not stay `running`, so record that much.
        this.log.error({ err, run_id: id }, 'the outcome of a run was refused; recording a failure');
        return this.outcomes
          .fail(
            id,
            `the executor could not record the outcome of this run (${kind}): ${String(err).slice(0, 200)}`,
            {
              exit_code: null,
              execution_time_seconds: safeSeconds(result.execution_time_seconds),
              memory_usage_mb: null,
            },
            executorId,
            unwritten,
          )
          .then(
            () => true,
            (again) => {
              this.log.error({ err: again, run_id: id }, 'could not record the failure of a run either');
              return false;
            },
          );
      }
    }
  }
}

function safeSeconds(seconds: number): number {
  return Number.isFinite(seconds) && seconds >= 0 && seconds < 9_999_999 ? seconds : 0;
}
