/** Rows for tests, made through the repositories (never hand-written SQL). */
import { createHash, randomBytes } from 'node:crypto';
import type { Run } from '../../src/domain/run.ts';
import type { Script } from '../../src/domain/script.ts';
import type { User } from '../../src/domain/user.ts';
import type { Repositories } from '../../src/repositories/index.ts';
import type { NewScript } from '../../src/repositories/script-repository.ts';
import type { NewUser } from '../../src/repositories/user-repository.ts';

// A syntactically valid argon2id PHC string; tests of the repositories do not verify it.
export const FAKE_HASH =
  '$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA';

let counter = 0;
const unique = () => `${process.pid}${++counter}${randomBytes(2).toString('hex')}`;

export async function makeUser(repos: Repositories, overrides: Partial<NewUser> = {}): Promise<User> {
  const tag = unique();
  return repos.users.create({
    email: `user${tag}@example.com`,
    username: `user_${tag}`,
    hashed_password: FAKE_HASH,
    ...overrides,
  });
}

export async function makeScript(
  repos: Repositories,
  userId: number,
  overrides: Partial<NewScript> = {},
): Promise<Script> {
  const tag = unique();
  const ext = overrides.file_extension ?? '.py';
  return repos.scripts.create({
    user_id: userId,
    filename: `${tag}${ext}`,
    original_filename: `strategy_${tag}${ext}`,
    file_path: `/nonexistent/${tag}${ext}`,
    file_size: 100,
    file_extension: ext,
    sha256: createHash('sha256').update(tag).digest('hex'),
    ...overrides,
  });
}

/** A lease for tests that start runs by hand (no executor renews it). */
export const LEASE = { executorId: 'test-executor', seconds: 300 };

/** Queues a run of the script (manual, a generous cap). */
export function queueRun(repos: Repositories, scriptId: number, maxActive = 100): Promise<Run> {
  return repos.runs.queue(scriptId, { maxActive });
}

/** Queues a run of the script and starts it under LEASE, as an executor would; returns the running run. */
export async function startRun(repos: Repositories, scriptId: number, maxActive = 100): Promise<Run> {
  const run = await queueRun(repos, scriptId, maxActive);
  return repos.leases.start(run.id, LEASE);
}

/** Starts the script's queued run (the one queued last) under LEASE. */
export async function startQueuedRun(repos: Repositories, scriptId: number): Promise<Run> {
  const script = await repos.scripts.getById(scriptId);
  if (script.last_run_id === null) throw new Error(`script ${scriptId} has no run`);
  return repos.leases.start(script.last_run_id, LEASE);
}
