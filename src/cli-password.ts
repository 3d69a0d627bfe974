/**
 * How `create-admin` gets a password without it ever being on the command line
 * (shell history, and /proc/<pid>/cmdline, which every process of the host reads):
 * all of standard input with `--password-stdin` (one trailing newline dropped), or a
 * prompt that does not echo when standard input is a terminal.
 */
import type { Readable, Writable } from 'node:stream';

export class PasswordInputError extends Error {
  override name = 'PasswordInputError';
}

/** Reads all of `input`; a single trailing newline (`\n` or `\r\n`) is not part of the password. */
export async function readPasswordFrom(input: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of input) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
  const text = Buffer.concat(chunks).toString('utf8');
  const password = text.replace(/\r?\n$/, '');
  if (password.length === 0) throw new PasswordInputError('no password on standard input');
  if (/[\r\n]/.test(password))
    throw new PasswordInputError('the password on standard input must be one line');
  return password;
}

/** The terminal's standard input, as far as raw mode goes. */
interface TtyInput extends Readable {
  isTTY?: boolean;
  setRawMode?(mode: boolean): unknown;
}

/** Asks on `output` and reads one line from the terminal `input` without echoing it. */
export function promptHidden(question: string, input: TtyInput, output: Writable): Promise<string> {
  return new Promise((resolve, reject) => {
    // Echo off before the question: what is typed right after it must not show.
    input.setRawMode?.(true);
    output.write(question);
    let line = '';
    const finish = (error: Error | null) => {
      input.off('data', onData);
      input.setRawMode?.(false);
      input.pause();
      output.write('\n');
      if (error) reject(error);
      else resolve(line);
    };
    const onData = (chunk: Buffer | string) => {
      for (const ch of chunk.toString()) {
        if (ch === '\r' || ch === '\n') return finish(null);
        if (ch === '\u0003' || ch === '\u0004') return finish(new PasswordInputError('cancelled'));
        if (ch === '\u007f' || ch === '\b') line = [...line].slice(0, -1).join('');
        else line += ch;
      }
    };
    input.on('data', onData);
    input.resume();
  });
}

/** The password: from standard input when asked, or from a terminal prompt (typed twice). */
export async function readPassword(options: {
  stdin: boolean;
  input: TtyInput;
  output: Writable;
}): Promise<string> {
  if (options.stdin) return readPasswordFrom(options.input);
  if (options.input.isTTY !== true)
    throw new PasswordInputError(
      'no password: standard input is not a terminal, so pipe the password in and pass --password-stdin',
    );
  const first = await promptHidden('Password: ', options.input, options.output);
  const second = await promptHidden('Repeat the password: ', options.input, options.output);
  if (first !== second) throw new PasswordInputError('the two passwords differ; nothing was changed');
  if (first.length === 0) throw new PasswordInputError('no password given');
  return first;
}
