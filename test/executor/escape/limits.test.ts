/**
 * Per-run totals: memory of all the run's processes together (tmpfs included),
 * the number of its processes, its CPU time — whatever it forks.
 */
import t from 'tap';
import { assertRefusal, escapeFixture, processesOf, sandboxAvailable } from '../../helpers/escape.ts';
import { eventually, executorFixture } from '../../helpers/executor.ts';

// Many sandboxed runs: more than tap's 120 s per file on a loaded 2-core machine.
t.setTimeout(300_000);

const MEMORY_MB = 128;

t.test(
  'several children allocating past the run’s memory total: killed, reason and peak recorded',
  async (t) => {
    if (!sandboxAvailable(t)) return assertRefusal(t, await executorFixture(t));
    const e = await escapeFixture(t, { SCRIPT_MEMORY_MB: String(MEMORY_MB) });
    t.ok(e.executor, 'started');
    const py = [
      'import os, time',
      'print("uid", os.getuid(), flush=True)',
      '# Each child stays under the per-process limit (RLIMIT_AS); four of them are far past the total.',
      'for _ in range(4):',
      '    if os.fork() == 0:',
      '        block = bytearray(60 * 1024 * 1024)',
      '        for i in range(0, len(block), 4096): block[i] = 1',
      '        time.sleep(30)',
      '        os._exit(0)',
      'time.sleep(30)',
      'print("survived", flush=True)',
    ].join('\n');
    const { script, output } = await e.run('hog.py', py);
    t.match(script, { status: 'failed', error_message: new RegExp(`memory limit of ${MEMORY_MB} MB`) });
    t.notMatch(output, /survived/, 'the run did not go on');
    t.ok(
      script.memory_usage_mb !== null && script.memory_usage_mb >= MEMORY_MB * 0.75,
      `the peak is the run's total (${script.memory_usage_mb} MB), not one process'`,
    );
    t.ok(
      script.memory_usage_mb !== null && script.memory_usage_mb <= MEMORY_MB + 1,
      'and never past the limit',
    );
    const uid = Number(/uid (\d+)/.exec(output)?.[1]);
    await eventually('every process of the run is gone', async () => (await processesOf(uid)).length === 0);

    // JavaScript is held by the same total. That tmpfs pages count is the next test's to show
    // (each part alone under the total, in Python). Node's own memory in the sandbox is too
    // uncertain to split the total finely here: once, under load, 60 MB in /dev/shm plus Node
    // itself reached 128 MB before the run's first line.
    const js = [
      "const fs = require('node:fs');",
      'for (let i = 0; i < 30; i++) fs.appendFileSync("/dev/shm/f", Buffer.alloc(1 << 20, 1));',
      'console.log("shm ok 30 MB");',
      'const keep = [];',
      'for (let i = 0; i < 120; i++) keep.push(Buffer.alloc(1 << 20, 1));',
      'console.log("survived", keep.length);',
    ].join('\n');
    const hog = await e.run('hog.js', js);
    t.match(
      hog.script,
      { status: 'failed', error_message: /memory limit/ },
      'JavaScript: killed at the total',
    );
    t.match(hog.output, /^shm ok 30 MB$/m, 'JavaScript: it ran until its buffers crossed the total');
    t.notMatch(hog.output, /survived/);
  },
);

t.test(
  'tmpfs pages count in the run’s memory total: /dev/shm plus a heap, each under it, are killed together',
  async (t) => {
    if (!sandboxAvailable(t)) return assertRefusal(t, await executorFixture(t));
    // The private tmpfs are large enough for 80 MB: only the memory total can stop the run.
    const e = await escapeFixture(t, { SCRIPT_MEMORY_MB: String(MEMORY_MB), SCRIPT_TMP_MB: '100' });
    const py = [
      'MB = 1 << 20',
      'def touch(n):',
      '    block = bytearray(n * MB)',
      '    for i in range(0, len(block), 4096): block[i] = 1',
      '    return block',
      '# Each part alone (and freed before the next) stays under the total …',
      'block = touch(80)',
      'print("heap ok 80 MB alone", flush=True)',
      'del block',
      '# Two files: one file is capped at 64 MB (RLIMIT_FSIZE).',
      'for name in ["/dev/shm/fill-1", "/dev/shm/fill-2"]:',
      '    with open(name, "wb") as f:',
      '        for _ in range(40): f.write(b"x" * MB)',
      'print("shm ok 80 MB alone", flush=True)',
      '# … both together are past it.',
      'block = touch(80)',
      'print("survived", flush=True)',
    ].join('\n');
    const { script, output } = await e.run('shm-and-heap.py', py);
    t.match(output, /^heap ok 80 MB alone$/m, 'the heap alone stays under the total');
    t.match(output, /^shm ok 80 MB alone$/m, 'so does /dev/shm alone');
    t.notMatch(output, /survived/, 'together they are killed');
    t.match(script, {
      status: 'failed',
      error_message: new RegExp(`memory limit of ${MEMORY_MB} MB \\(peak \\d+ MB\\)`),
    });
    // The cgroup's peak: the tmpfs pages with the heap (the heap alone is ~90 MB, and a
    // sum over the processes would not see /dev/shm at all).
    t.ok(
      script.memory_usage_mb !== null &&
        script.memory_usage_mb >= MEMORY_MB * 0.9 &&
        script.memory_usage_mb <= MEMORY_MB + 1,
      `the peak is the cgroup's, tmpfs included (${script.memory_usage_mb} MB)`,
    );
  },
);

t.test('a fork bomb stops at SCRIPT_MAX_PROCESSES and leaves nothing behind', async (t) => {
  if (!sandboxAvailable(t)) return assertRefusal(t, await executorFixture(t));
  const e = await escapeFixture(t, { SCRIPT_MAX_PROCESSES: '24', SCRIPT_MEMORY_MB: '256' });
  const py = [
    'import os, time',
    'print("uid", os.getuid(), flush=True)',
    'children = 0',
    'try:',
    '    while children < 1000:',
    '        if os.fork() == 0:',
    '            # Every child forks too, until the limit answers.',
    '            try:',
    '                while True:',
    '                    if os.fork() == 0: time.sleep(60)',
    '            except OSError:',
    '                time.sleep(60)',
    '        children += 1',
    'except OSError as e:',
    '    print("fork refused", e.strerror, "after", children, flush=True)',
    'os._exit(0)',
  ].join('\n');
  const { script, output } = await e.run('bomb.py', py);
  t.match(output, /^fork refused Resource temporarily unavailable after \d+/m, 'fork fails at the limit');
  t.ok(Number(/after (\d+)/.exec(output)?.[1]) < 24, 'well below what the bomb wanted');
  t.equal(script.status, 'completed', 'the script itself exits');
  const uid = Number(/uid (\d+)/.exec(output)?.[1]);
  await eventually(
    'the bomb’s processes are gone with the run',
    async () => (await processesOf(uid)).length === 0,
  );

  const js = [
    "const { spawn } = require('node:child_process');",
    'let started = 0, refused = null;',
    'function more() {',
    '  if (started >= 200) return done();',
    "  const c = spawn('/bin/sleep', ['60']);",
    "  c.on('error', (e) => { refused = e.code; done(); });",
    "  c.on('spawn', () => { started++; more(); });",
    '}',
    "function done() { console.log('spawn', refused ? 'refused ' + refused : 'LEAK', 'after', started); process.exit(0); }",
    'more();',
  ].join('\n');
  const bomb = await e.run('bomb.js', js);
  t.match(bomb.output, /^spawn refused E\w+ after \d+/m, 'JavaScript: spawning fails at the limit');
});

t.test(
  'CPU time is a per-run total: two busy processes, each under SCRIPT_CPU_SECONDS, are killed together',
  async (t) => {
    if (!sandboxAvailable(t)) return assertRefusal(t, await executorFixture(t));
    const CPU_SECONDS = 2;
    const WALL_SECONDS = 30;
    const e = await escapeFixture(t, {
      SCRIPT_CPU_SECONDS: String(CPU_SECONDS),
      MAX_EXECUTION_SECONDS: String(WALL_SECONDS),
    });
    const spin = (seconds: number) => [
      'def spin(seconds):',
      '    end = time.process_time() + seconds',
      '    while time.process_time() < end: pass',
      `spin(${seconds})`,
    ];
    const cpuOf = async (script: { last_run_id: number | null }) =>
      Number((await e.f.repos.runs.getById(script.last_run_id ?? 0)).cpu_time_seconds);

    // A short busy run: its CPU time is recorded.
    const short = await e.run('busy.py', ['import time', ...spin(0.3), 'print("done")'].join('\n'));
    t.equal(short.script.status, 'completed', `a short busy run completes\n${short.output}`);
    const shortCpu = await cpuOf(short.script);
    t.ok(shortCpu >= 0.25 && shortCpu < CPU_SECONDS, `a busy run records its CPU time (${shortCpu} s)`);

    // Each process stops spinning at 1.6 s of its own (under RLIMIT_CPU, so no SIGXCPU) and
    // then sleeps; only their sum, 3.2 s, is past the limit.
    const py = [
      'import os, time',
      'child = os.fork()',
      ...spin(1.6),
      'print("spun", "child" if child == 0 else "parent", flush=True)',
      'if child == 0:',
      '    time.sleep(10)',
      '    os._exit(0)',
      'os.waitpid(child, 0)',
      'print("survived", flush=True)',
    ].join('\n');
    const { script, output } = await e.run('two-busy.py', py, 60_000);
    t.match(
      script,
      {
        status: 'failed',
        error_message: `killed: the run's processes together used its CPU time limit of ${CPU_SECONDS} s`,
      },
      `killed for its CPU total\n${output}`,
    );
    t.notMatch(output, /survived/, 'the run did not go on');
    t.ok(
      script.execution_time_seconds !== null && script.execution_time_seconds < WALL_SECONDS,
      `before its wall-time limit (${script.execution_time_seconds} s)`,
    );
    const cpu = await cpuOf(script);
    t.ok(
      cpu >= CPU_SECONDS && cpu <= 2 * 1.6 + 0.5,
      `its CPU time is the processes' sum, past what one of them used (${cpu} s)`,
    );
  },
);
