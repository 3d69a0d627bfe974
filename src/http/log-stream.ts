/**
 * A run's output over Server-Sent Events: what is there (or its last `tail` lines),
 * then new batches as the executor stores them (`log` events), then one `end` event
 * `{status, exit_code}`. A finished run sends its output and `end` at once. Stops early
 * when the client goes away, and at `shutdown()` (the app is closing).
 */
import type { ServerResponse } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { LogFollow } from '../services/run-service.ts';
import { tailLines } from '../services/run-service.ts';
import { problem, sendProblem, shuttingDown } from './errors.ts';
import type { Followers } from './followers.ts';
import { principalOf } from './plugins/auth.ts';

/** How often a follower looks for new output. */
export const FOLLOW_POLL_MS = 500;
const HEARTBEAT_MS = 15_000;
/** Retry-After of a refused stream: streams end with their runs, which are short. */
export const FOLLOW_RETRY_AFTER_SECONDS = 10;

/** The description of a logs route (text or SSE), for OpenAPI. */
export function logsDescription(followers: Followers): string {
  return (
    '`text/plain`; `tail=N` keeps the last N lines. With `follow=true`, `text/event-stream`: ' +
    '`log` events carry new output (each line a `data:` line), and one `end` event ' +
    '(`{"status", "exit_code"}`) closes the stream when the run is over (at once for a finished ' +
    'run, after its output). When the server shuts down, a `shutdown` event (`{"detail"}`) ' +
    'closes the stream instead: reconnect to go on (the output is sent again from the start, ' +
    `or its \`tail\`). At most ${followers.limits.perUser} streams per user and ` +
    `${followers.limits.total} in all are open at once; past that, 429 TOO_MANY_FOLLOWERS with Retry-After.`
  );
}

/**
 * Answers a follow request: admits the stream (or answers 429/503), then streams
 * `follow` until its run ends. `open` makes the follower (a 404 there is an ordinary answer).
 */
export async function streamLogs(
  request: FastifyRequest,
  reply: FastifyReply,
  followers: Followers,
  follow: LogFollow,
  tail: number | undefined,
): Promise<FastifyReply | undefined> {
  const stream = new LogStream(request, reply.raw);
  // No await between this check and the registration: they are one step.
  const admitted = followers.admit(principalOf(request).user_id, () => stream.shutdown());
  if ('refused' in admitted) {
    request.log.info({ run_id: follow.runId, refused: admitted.refused }, 'log stream refused');
    return sendProblem(
      reply.header('retry-after', String(FOLLOW_RETRY_AFTER_SECONDS)),
      admitted.refused === 'closing'
        ? shuttingDown(request.id)
        : problem(
            429,
            'TOO_MANY_FOLLOWERS',
            admitted.refused === 'user'
              ? `at most ${followers.limits.perUser} log streams of one user may be open at once`
              : 'too many log streams are open; try again shortly',
            { request_id: request.id },
          ),
    );
  }
  // The stream writes its own head: headers Fastify holds (the security headers, CORS: set
  // by onRequest hooks) go on the raw response, where writeHead merges them under its own.
  for (const [name, value] of Object.entries(reply.getHeaders()))
    if (value !== undefined) reply.raw.setHeader(name, value);
  reply.hijack();
  try {
    await stream.run(follow, tail);
  } finally {
    admitted.release();
  }
  return undefined;
}

/**
 * One Server-Sent Event. SSE ends a line at CRLF, LF or a lone CR
 * (https://html.spec.whatwg.org/multipage/server-sent-events.html#parsing-an-event-stream),
 * so output is split at all three: each piece is a `data:` line of its own, and no
 * output can start a line of the stream (`event: end` in a script's output stays data).
 */
export function sseEvent(name: string, data: string): string {
  return `event: ${name}\n${data
    .split(/\r\n|\r|\n/)
    .map((line) => `data: ${line}`)
    .join('\n')}\n\n`;
}

class LogStream {
  /** Aborted when the stream must stop: the client left, or the app is closing. */
  private readonly stop = new AbortController();

  private readonly request: FastifyRequest;
  private readonly response: ServerResponse;

  constructor(request: FastifyRequest, response: ServerResponse) {
    this.request = request;
    this.response = response;
    // The response's 'close': it ended, or its connection went away.
    response.on('close', () => this.stop.abort());
  }

  /** Ends the stream now with a `shutdown` event; the loop notices and writes nothing more. */
  shutdown(): void {
    if (this.stop.signal.aborted) return;
    this.stop.abort();
    if (!this.response.headersSent) return; // run() has not started: it will not
    this.write(
      sseEvent('shutdown', JSON.stringify({ detail: 'the server is shutting down; reconnect to go on' })),
    );
    this.response.end();
  }

  private write(text: string): void {
    if (!this.response.writableEnded && !this.response.destroyed) this.response.write(text);
  }

  async run(follow: LogFollow, tail: number | undefined): Promise<void> {
    const { request, response } = this;
    const signal = this.stop.signal;
    if (signal.aborted) {
      response.destroy(); // shut down (or gone) between admission and here
      return;
    }
    response.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
      'x-request-id': request.id,
    });
    // Now, not with the first output: a client learns at once that the stream is open.
    response.flushHeaders();
    let lastWrite = Date.now();
    const send = (text: string) => {
      if (text !== '') {
        this.write(sseEvent('log', text));
        lastWrite = Date.now();
      }
    };
    let state = follow.first;
    // The first answer: everything so far, or its tail.
    send(tailLines(state.chunks.map((c) => c.data).join(''), tail));
    try {
      while (!signal.aborted) {
        if (state.finished) {
          // A finished run's chunks (read with its status) are its last.
          this.write(sseEvent('end', JSON.stringify({ status: state.status, exit_code: state.exit_code })));
          break;
        }
        await sleep(FOLLOW_POLL_MS, signal);
        if (signal.aborted) break;
        state = await follow.next();
        if (signal.aborted) break;
        for (const chunk of state.chunks) send(chunk.data);
        if (Date.now() - lastWrite > HEARTBEAT_MS) {
          this.write(': keep-alive\n\n');
          lastWrite = Date.now();
        }
      }
    } catch (err) {
      // Stopped while a query was under way (the pool may be closing): nothing to report.
      if (signal.aborted) return;
      // The status line is sent: report in the stream, as problem+json data.
      request.log.warn({ err }, 'log stream ended by an error');
      const code = (err as { code?: string }).code === 'NOT_FOUND' ? 'NOT_FOUND' : 'DATABASE_UNAVAILABLE';
      const status = code === 'NOT_FOUND' ? 404 : 503;
      this.write(
        sseEvent(
          'error',
          JSON.stringify(problem(status, code, 'the log stream stopped', { request_id: request.id })),
        ),
      );
    } finally {
      if (!response.writableEnded) response.end();
    }
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
