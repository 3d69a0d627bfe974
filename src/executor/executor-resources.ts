/**
 * What an executor holds on its host while it lives: its folder (dead executors'
 * folders reaped first), its run uids as root (swept before use), the sandbox, and
 * the sweeper of run uids. Acquired at start, released once no run is left; a start
 * that fails half-way releases what it had.
 */
import { rm } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import { createExecutorDir, reapDeadExecutors } from './executor-dir.ts';
import { Sandbox } from './sandbox/index.ts';
import { measureNodeReserve } from './script-command.ts';
import { Sweeper } from './sweeper.ts';
import { UidPool } from './uid-pool.ts';

export interface AcquireOptions {
  config: Config;
  executorId: string;
  /** The executor runs as root: runs get uids of their own. */
  asRoot: boolean;
  processUid: number;
  log: Logger;
}

export class ExecutorResources {
  readonly sweeper = new Sweeper();
  dir: string | undefined;
  pool: UidPool | undefined;
  sandbox: Sandbox | undefined;

  async acquire(options: AcquireOptions): Promise<void> {
    const { config, executorId, log } = options;
    this.dir = await createExecutorDir(config.EXECUTOR_WORK_DIR, executorId);
    const reaped = await reapDeadExecutors(config.EXECUTOR_WORK_DIR, executorId);
    if (reaped.length > 0) log.warn({ reaped }, 'reaped the folders and processes of dead executors');
    if (options.asRoot) {
      this.pool = await UidPool.acquire({
        baseUid: config.SCRIPT_UID,
        baseGid: config.SCRIPT_GID,
        // Twice the slots: a finished run's uid is swept while the next run starts.
        count: 2 * config.EXECUTOR_CONCURRENCY,
        executorId,
      });
      // A uid taken over from a dead executor may still have processes or files.
      await Promise.all(this.pool.users.map((user) => this.sweeper.sweep(user)));
    }
    // What a Node run's address-space limit must allow for (script-command.ts), measured off the event loop.
    const reserve = await measureNodeReserve(config.NODE_BIN);
    log.debug({ node_bin: config.NODE_BIN, reserved_mb: reserve }, 'address space Node reserves');
    this.sandbox = await Sandbox.open({
      config,
      log,
      processUid: options.processUid,
      users: this.pool?.users ?? [],
    });
  }

  /** The sweeper, the sandbox's cgroups and rules, the uids and the folder; failures are logged. */
  async release(log: Logger): Promise<void> {
    this.sweeper.close();
    await this.sandbox
      ?.close()
      .catch((err) => log.warn({ err }, 'could not remove the sandbox’s cgroups or rules'));
    await this.pool?.release().catch((err) => log.warn({ err }, 'could not release the script uids'));
    if (this.dir) await rm(this.dir, { recursive: true, force: true }).catch(() => {});
  }
}
