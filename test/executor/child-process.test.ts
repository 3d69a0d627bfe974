/**
 * startRun on its own: a spawn that fails is a rejected `done`, never an uncaught
 * 'error' event that would take the executor (and, under `npm start`, the API) down.
 */
import t from 'tap';
import { startRun } from '../../src/executor/child-process.ts';

t.test('a spawn that fails rejects done with the reason instead of crashing the process', async (t) => {
  const handle = startRun({
    // No sandbox: the spawn itself is what fails.
    confinement: {
      argv: ['/bin/true'],
      signalAsExitCode: false,
      measuresItself: false,
      watch: () => {},
      kill: async () => {},
      finish: async () => ({ peakMemoryMb: null, cpuSeconds: null, memoryExceeded: false }),
    },
    cwd: '/nonexistent/folder/of/a/run', // spawn reports ENOENT asynchronously, as 'error'
    timeoutMs: 5000,
    statsFile: '/nonexistent/folder/of/a/run/stats',
    onOutput: () => {},
  });
  t.equal(handle.pid, -1);
  await t.rejects(handle.done, { code: 'ENOENT' });
  handle.kill('cancelled'); // harmless
  // An uncaught 'error' would surface on a later tick and fail this test file.
  await new Promise((resolve) => setTimeout(resolve, 100));
});
