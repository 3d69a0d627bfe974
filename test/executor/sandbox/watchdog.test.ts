/**
 * The watchdog, forced (a test option of Sandbox.open) on a host that could make cgroups:
 * what holds a run's totals on hosts without a writable cgroup. Run for real: a script
 * whose children together hold more than SCRIPT_MEMORY_MB, each far below its own
 * address-space limit, is killed for memory and its peak total is recorded.
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pino } from 'pino';
import t from 'tap';
import { loadConfig } from '../../../src/config.ts';
import { startRun } from '../../../src/executor/child-process.ts';
import { prepareWorkspace } from '../../../src/executor/run-workspace.ts';
import { Sandbox } from '../../../src/executor/sandbox/index.ts';
import { UidPool } from '../../../src/executor/uid-pool.ts';
import { processesOf } from '../../helpers/escape.ts';
import { eventually } from '../../helpers/executor.ts';

t.setTimeout(120_000);

const HOG = `
import os, sys, time
children = []
for i in range(4):
    pid = os.fork()
    if pid == 0:
        data = b"x" * (60 << 20)  # 60 MiB, touched
        print("child", i, "holds", len(data) >> 20, "MiB", flush=True)
        time.sleep(30)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
print("survived", flush=True)
`;

t.test(
  'forced watchdog: a run whose processes together pass the memory total is killed, its peak recorded',
  async (t) => {
    const root = process.getuid?.() === 0;
    if (!root) t.comment('not root: the watchdog follows the run’s process group instead of its uid');
    const base = await mkdtemp(path.join(tmpdir(), 'dc-watchdog-'));
    await chmod(base, 0o711);
    t.teardown(() => rm(base, { recursive: true, force: true }));
    const pool = root
      ? await UidPool.acquire({
          baseUid: 3_000_400_000,
          baseGid: 3_000_400_000,
          count: 1,
          executorId: 'watchdog-test',
          lockDir: path.join(base, 'locks'),
        })
      : null;
    t.teardown(() => pool?.release());
    const user = pool?.users[0];
    const config = loadConfig({
      NODE_ENV: 'test',
      SCRIPT_MEMORY_MB: '128',
      EXECUTOR_WORK_DIR: path.join(base, 'runs'),
    });
    const sandbox = await Sandbox.open({
      config,
      log: pino({ level: 'silent' }),
      processUid: process.getuid?.() ?? 1000,
      users: pool?.users ?? [],
      forceWatchdog: true,
    });
    t.teardown(() => sandbox.close());
    t.equal(sandbox.protections.cgroup, null, 'no cgroup: the watchdog holds the totals');

    const workspace = await prepareWorkspace({
      root: base,
      scriptId: 1,
      source: Readable.from([Buffer.from(HOG)]),
      extension: '.py',
      user,
    });
    const confinement = await sandbox.confine({
      name: path.basename(workspace.dir),
      scratchDir: workspace.dir,
      entry: workspace.entry,
      user,
      env: { PATH: '/usr/bin:/bin', HOME: workspace.dir },
      command: ['/usr/bin/python3', '-I', '-u', workspace.entry],
      limits: {
        addressSpaceBytes: 1 << 30, // each process alone stays far below its own limit
        cpuSeconds: 60,
        maxProcesses: 64,
        maxOpenFiles: 256,
        maxFileBytes: 1 << 20,
      },
    });
    t.equal(confinement.measuresItself, false, 'GNU time stays in the chain without a cgroup');
    let output = '';
    const handle = startRun({
      confinement,
      cwd: workspace.dir,
      timeoutMs: 60_000,
      statsFile: workspace.statsFile,
      onOutput: (text) => {
        output += text;
      },
    });
    const outcome = await handle.done;
    t.equal(outcome.killed, 'memory', `killed for memory (${JSON.stringify(outcome)}; output: ${output})`);
    t.notMatch(output, /survived/, 'the script did not run to its end');
    t.ok(
      (outcome.peakMemoryMb ?? 0) > 128,
      `the recorded peak is the run’s total, past the limit (${outcome.peakMemoryMb} MB), not one process’s 60`,
    );
    // Killed children can still be exiting (or waiting to be reaped) when the pipes close;
    // a survivor would stay for its 30 s sleep.
    if (user)
      t.ok(
        await eventually(
          'no process of the run is left',
          async () => (await processesOf(user.uid)).length === 0,
          5000,
        ),
        'nothing of the run is left',
      );
    await workspace.remove();
  },
);
