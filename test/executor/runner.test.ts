/**
 * startRun on its own: a spawn that fails is a rejected `done`, never an uncaught
 * 'error' event that would take the executor (and, under `npm start`, the API) down.
 */
import t from 'tap';
import { startRun } from '../../src/executor/runner.js';

t.test('a spawn that fails rejects done with the reason instead of crashing the process', async (t) => {
  const handle = startRun({
    command: ['/bin/true'],
    cwd: '/nonexistent/folder/of/a/run', // spawn reports ENOENT asynchronously, as 'error'
    env: {},
    statsFile: '/nonexistent/folder/of/a/run/stats',
    limits: {
      timeoutMs: 5000,
      memoryBytes: 256 * 1024 * 1024,
      cpuSeconds: 5,
      maxProcesses: 16,
      maxOpenFiles: 64,
      maxFileBytes: 1024 * 1024,
    },
    onOutput: () => {},
  });
  t.equal(handle.pid, -1);
  await t.rejects(handle.done, { code: 'ENOENT' });
  handle.kill('cancelled'); // harmless
  // An uncaught 'error' would surface on a later tick and fail this test file.
  await new Promise((resolve) => setTimeout(resolve, 100));
});
