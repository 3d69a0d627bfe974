/**
 * cgroup v2's file logic, exercised without a v2 host: against a FAKE cgroup2 tree, plain
 * folders and files in a temporary folder (this development host has cgroup v1). What is
 * tested is only what is pure file logic — finding the executor's cgroup from mountinfo
 * and /proc/self/cgroup, handing the controllers down, the limit files a run's cgroup gets,
 * reading its totals, cgroup.kill. What needs the kernel's cgroup2 (the "no internal
 * processes" rule and moving the executor into a leaf, rmdir of a cgroup whose files the
 * kernel owns, a limit actually enforced) is said with t.comment, not pretended here.
 */
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { detectCgroups } from '../../../src/executor/sandbox/cgroup-detect.ts';
import { CgroupParent } from '../../../src/executor/sandbox/cgroup-parent.ts';

interface Fake {
  /** Stands for /sys/fs/cgroup (the cgroup2 mount). */
  mount: string;
  /** Stands for /proc/self. */
  proc: string;
  /** The executor's own cgroup in the fake tree. */
  own: string;
}

async function fakeTree(t: Test, controllers: string): Promise<Fake> {
  const base = await mkdtemp(path.join(tmpdir(), 'dc-fake-cgroup2-'));
  t.teardown(() => rm(base, { recursive: true, force: true }));
  const mount = path.join(base, 'sys-fs-cgroup');
  const proc = path.join(base, 'proc-self');
  const own = path.join(mount, 'system.slice', 'dollarclub.service');
  await mkdir(own, { recursive: true });
  await mkdir(proc);
  await writeFile(path.join(own, 'cgroup.controllers'), `${controllers}\n`);
  await writeFile(path.join(own, 'cgroup.subtree_control'), '');
  // A v2-only host: one cgroup2 mount, and /proc/self/cgroup's single "0::" line.
  await writeFile(
    path.join(proc, 'mountinfo'),
    [
      '22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw',
      `35 24 0:30 / ${mount} rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate`,
      '',
    ].join('\n'),
  );
  await writeFile(path.join(proc, 'cgroup'), '0::/system.slice/dollarclub.service\n');
  return { mount, proc, own };
}

const limits = { memoryBytes: 128 << 20, maxProcesses: 64 };

t.test(
  'fake cgroup2 tree: the executor’s own cgroup is found from mountinfo and /proc/self/cgroup',
  async (t) => {
    const fake = await fakeTree(t, 'cpuset cpu io memory pids');
    t.same(detectCgroups(fake.proc), { version: 2, dir: fake.own });

    const without = await fakeTree(t, 'cpu io pids');
    t.match(
      detectCgroups(without.proc),
      /does not offer the memory controller/,
      'no memory controller: why not',
    );
  },
);

t.test('fake cgroup2 tree: a run’s cgroup gets memory.max, no swap, oom.group and pids.max', async (t) => {
  const fake = await fakeTree(t, 'cpuset cpu io memory pids');
  const parent = CgroupParent.create({ version: 2, dir: fake.own });
  t.equal(
    await readFile(path.join(fake.own, 'cgroup.subtree_control'), 'utf8'),
    '+memory +pids +cpu',
    'the controllers are handed down from the executor’s cgroup',
  );
  const [folder] = await readdir(fake.own).then((names) => names.filter((n) => n.startsWith('dollarclub-')));
  t.match(
    folder,
    new RegExp(`^dollarclub-${process.pid}-[0-9a-f]{8}$`),
    'the executor’s folder of run cgroups',
  );
  const runs = path.join(fake.own, folder as string);
  t.equal(
    await readFile(path.join(runs, 'cgroup.subtree_control'), 'utf8'),
    '+memory +pids +cpu',
    'and on to the runs',
  );

  const run = await parent.createRun(limits);
  const [procs] = run.procsFiles;
  t.equal(run.procsFiles.length, 1, 'one tree: one cgroup.procs to join');
  const dir = path.dirname(procs as string);
  t.equal(path.dirname(dir), runs);
  const read = (name: string) => readFile(path.join(dir, name), 'utf8');
  t.equal(await read('memory.max'), String(128 << 20), 'memory.max: the run’s total');
  t.equal(await read('memory.swap.max'), '0', 'no swap');
  t.equal(await read('memory.oom.group'), '1', 'one process past the limit takes the run with it');
  t.equal(await read('pids.max'), '64');

  // The next run's cgroup is made ahead, with the same limits, and is another folder.
  const next = await parent.createRun(limits);
  const nextDir = path.dirname(next.procsFiles[0] as string);
  t.not(nextDir, dir, 'every run gets a fresh cgroup');
  t.equal(await readFile(path.join(nextDir, 'memory.max'), 'utf8'), String(128 << 20));
  t.comment('removal (rmdir of a cgroup with kernel-owned files) needs a real cgroup2 host: not tested here');
});

t.test(
  'fake cgroup2 tree: the run’s totals are read from memory.peak, cpu.stat and memory.events',
  async (t) => {
    const fake = await fakeTree(t, 'cpu memory pids');
    const parent = CgroupParent.create({ version: 2, dir: fake.own });
    const run = await parent.createRun(limits);
    const dir = path.dirname(run.procsFiles[0] as string);
    await writeFile(path.join(dir, 'memory.peak'), `${200 << 20}\n`);
    await writeFile(
      path.join(dir, 'cpu.stat'),
      'usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n',
    );
    await writeFile(
      path.join(dir, 'memory.events'),
      'low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 1\n',
    );
    t.same(await run.usage(), { peakBytes: 200 << 20, cpuSeconds: 2.5, oomKills: 1 });

    await run.kill();
    t.equal(await readFile(path.join(dir, 'cgroup.kill'), 'utf8'), '1', 'killed at once with cgroup.kill');
    t.comment(
      'moving the executor into a leaf cgroup (EBUSY from cgroup.subtree_control) and the limits being enforced need a real cgroup2 host',
    );
  },
);
