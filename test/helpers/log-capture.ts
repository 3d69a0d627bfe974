/** A pino logger whose lines tests can read. */
import { Writable } from 'node:stream';
import { pino } from 'pino';

export interface CapturedLog {
  level: number;
  msg?: string;
  [key: string]: unknown;
}

export function captureLogger(level: pino.LevelWithSilent = 'debug') {
  const lines: CapturedLog[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n')) if (line.trim() !== '') lines.push(JSON.parse(line));
      done();
    },
  });
  return { log: pino({ level }, stream), lines, text: () => lines.map((l) => JSON.stringify(l)).join('\n') };
}
