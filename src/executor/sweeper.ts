/**
 * Ends everything a run's uid left: every process of the uid, wherever it went
 * (a process that left the run's process group with setsid included), and its
 * entries in /tmp, /var/tmp and /dev/shm, before the uid goes to another
 * user's run.
 *
 * The kill is `kill -9 -1` run as that uid, which the kernel applies to every
 * process of the uid in one pass (a forking script cannot outrun it). It is run
 * by one small root helper per executor (a shell loop reading `<uid> <gid>` lines,
 * started once, dying with the executor), because forking the executor itself, a
 * large Node process, costs far more than the kill. Entries in the shared temporary
 * folders are deleted as the uid, never as root, so a planted symlink cannot make
 * root delete anything the uid could not delete itself.
 */
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import { lstat, readdir } from 'node:fs/promises';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import type { SandboxUser } from './process-group.ts';
import { SETPRIV_BIN } from './tools.ts';

const KILL_AS = `${SETPRIV_BIN} --reuid="$uid" --regid="$gid" --clear-groups -- /bin/sh -c 'kill -9 -1 2>/dev/null; exit 0'`;
// Only numbers, never 0: the helper is root, and `kill -9 -1` as root would end everything.
const HELPER = `
while read -r uid gid; do
  case "$uid:$gid" in *[!0-9:]*|:*|*:) echo bad; continue ;; esac
  if [ "$uid" -le 0 ] || [ "$gid" -le 0 ]; then echo bad; continue; fi
  if ${KILL_AS}; then echo ok; else echo failed; fi
done`;

const SHARED_TEMP_DIRS = ['/tmp', '/var/tmp', '/dev/shm'];

type Helper = ChildProcessByStdio<Writable, Readable, null>;

export class Sweeper {
  private helper: Helper | undefined;
  private waiting: Array<(error?: Error) => void> = [];

  /** SIGKILL to every process of `user` (a run's uid, never ours). */
  kill(user: SandboxUser): Promise<void> {
    const helper = this.helper ?? this.startHelper();
    return new Promise((resolve, reject) => {
      this.waiting.push((error) => (error ? reject(error) : resolve()));
      holdProcess(helper, true);
      helper.stdin.write(`${user.uid} ${user.gid}\n`);
    });
  }

  /** Kills the uid's processes, then deletes its entries in the shared temporary folders. */
  async sweep(user: SandboxUser): Promise<void> {
    await this.kill(user);
    const left: string[] = [];
    for (const dir of SHARED_TEMP_DIRS) {
      for (const name of await readdir(dir).catch(() => [] as string[])) {
        const entry = path.join(dir, name);
        if ((await lstat(entry).catch(() => null))?.uid === user.uid) left.push(entry);
      }
    }
    if (left.length > 0) await asUser(user, ['/bin/rm', '-rf', '--', ...left]);
  }

  close(): void {
    this.helper?.stdin.end();
    this.helper = undefined;
  }

  private startHelper(): Helper {
    const helper = spawn(SETPRIV_BIN, ['--pdeathsig=KILL', '--', '/bin/sh', '-c', HELPER], {
      cwd: '/',
      env: { PATH: '/usr/bin:/bin' },
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    let pending = '';
    helper.stdout.setEncoding('utf8').on('data', (text: string) => {
      pending += text;
      for (let end = pending.indexOf('\n'); end >= 0; end = pending.indexOf('\n')) {
        const answer = pending.slice(0, end);
        pending = pending.slice(end + 1);
        this.waiting.shift()?.(answer === 'ok' ? undefined : new Error(`the uid sweep answered ${answer}`));
      }
      if (this.waiting.length === 0) holdProcess(helper, false);
    });
    const gone = (error?: Error) => {
      if (this.helper === helper) this.helper = undefined;
      for (const waiter of this.waiting.splice(0)) waiter(error ?? new Error('the uid sweeper stopped'));
    };
    helper.on('error', gone);
    helper.on('exit', () => gone());
    helper.stdin.on('error', () => {}); // reported through 'exit'
    holdProcess(helper, false);
    this.helper = helper;
    return helper;
  }
}

/** An idle helper must not keep the process alive (stop() closes it); a busy one must, until it answers. */
function holdProcess(helper: Helper, hold: boolean): void {
  for (const handle of [helper, helper.stdin, helper.stdout] as Array<{
    ref?: () => void;
    unref?: () => void;
  }>)
    hold ? handle.ref?.() : handle.unref?.();
}

/** Runs a command as `user` (rarely needed: only when a run left temporary files). */
function asUser(user: SandboxUser, command: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      SETPRIV_BIN,
      [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '--', ...command],
      { cwd: '/', env: { PATH: '/usr/bin:/bin' }, stdio: 'ignore' },
    );
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`could not clean up after uid ${user.uid} (exit ${code})`)),
    );
  });
}
