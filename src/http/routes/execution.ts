/**
 * Runs: queue, cancel, output (plain or followed over Server-Sent Events), and
 * what is running now. Ownership as everywhere: someone else's script is a 404.
 */

import type { ServerResponse } from 'node:http';
import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import type { ExecutionRepository, LogState } from '../../repositories/execution-repository.js';
import type { RouteOptions } from '../context.js';
import { problem, sendProblem, shuttingDown } from '../errors.js';
import { Followers, type FollowLimits, followLimits } from '../followers.js';
import { ownerScope, principalOf } from '../plugins/auth.js';
import { IdParams, problems } from '../schemas/common.js';
import { Script } from '../schemas/script.js';

/** How often a follower looks for new output. */
export const FOLLOW_POLL_MS = 500;
const HEARTBEAT_MS = 15_000;
/** Retry-After of a refused stream: streams end with their runs, which are short. */
export const FOLLOW_RETRY_AFTER_SECONDS = 10;

export const executionRoutes: FastifyPluginAsyncTypebox<
  RouteOptions & { followLimits?: FollowLimits }
> = async (app, { ctx, followLimits: limits }) => {
  const executions = ctx.repos.executions;
  const followers = new Followers(limits ?? followLimits(ctx.config));

  app.get(
    '/scripts/running',
    {
      schema: {
        tags: ['runs'],
        summary: 'Scripts running now: your own (admins: everyone’s)',
        response: {
          200: Type.Object({ scripts: Type.Array(Type.Ref(Script)) }, { additionalProperties: false }),
          ...problems(401, 503),
        },
      },
    },
    async (request) => ({ scripts: await ctx.repos.scripts.listRunning(ownerScope(request)) }),
  );

  app.post(
    '/scripts/:id/execute',
    {
      schema: {
        tags: ['runs'],
        summary: 'Queue a run',
        description: `409 INVALID_STATE while queued or running; 429 TOO_MANY_RUNNING past MAX_CONCURRENT_SCRIPTS (${ctx.config.MAX_CONCURRENT_SCRIPTS}) queued + running scripts of the owner.`,
        params: IdParams,
        response: { 202: Type.Ref(Script), ...problems(400, 401, 404, 409, 429, 503) },
      },
    },
    async (request, reply) => {
      const script = await executions.queue(request.params.id, {
        ownerId: ownerScope(request),
        maxActive: ctx.config.MAX_CONCURRENT_SCRIPTS,
      });
      request.log.info({ script_id: script.id }, 'run queued');
      return reply.code(202).send(script);
    },
  );

  app.post(
    '/scripts/:id/cancel',
    {
      schema: {
        tags: ['runs'],
        summary: 'Cancel a queued or running run; a running process is killed',
        params: IdParams,
        response: { 200: Type.Ref(Script), ...problems(400, 401, 404, 409, 503) },
      },
    },
    async (request) => {
      const script = await executions.cancel(request.params.id, ownerScope(request));
      request.log.info({ script_id: script.id }, 'run cancelled');
      return script;
    },
  );

  app.get(
    '/scripts/:id/logs',
    {
      schema: {
        tags: ['runs'],
        summary: 'Captured output of the latest run',
        description:
          '`text/plain`; `tail=N` keeps the last N lines. With `follow=true`, `text/event-stream`: ' +
          '`log` events carry new output (each line a `data:` line), and one `end` event ' +
          '(`{"status", "exit_code"}`) closes the stream when the run is over. When the server ' +
          'shuts down, a `shutdown` event (`{"detail"}`) closes the stream instead: reconnect to ' +
          'go on (the output is sent again from the start, or its `tail`). At most ' +
          `${followers.limits.perUser} streams per user and ${followers.limits.total} in all are ` +
          'open at once; past that, 429 TOO_MANY_FOLLOWERS with Retry-After.',
        params: IdParams,
        produces: ['text/plain', 'text/event-stream'],
        querystring: Type.Object(
          {
            tail: Type.Optional(Type.Integer({ format: 'int32', minimum: 1, maximum: 100_000 })),
            follow: Type.Optional(Type.Boolean()),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.String({
            description: 'the output (text/plain), or an event stream (text/event-stream)',
          }),
          ...problems(400, 401, 404, 429, 503),
        },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      const owner = ownerScope(request);
      if (request.query.follow !== true) {
        const { logs } = await executions.readLogs(id, owner);
        return reply.type('text/plain; charset=utf-8').send(tailLines(logs, request.query.tail));
      }
      const first = await executions.followLogs(id, 0, owner); // a 404 is still an ordinary answer
      const stream = new LogStream(request, reply.raw);
      // No await between this check and the registration: they are one step.
      const admitted = followers.admit(principalOf(request).user_id, () => stream.shutdown());
      if ('refused' in admitted) {
        request.log.info({ script_id: id, refused: admitted.refused }, 'log stream refused');
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
      reply.hijack();
      try {
        await stream.run(executions, { id, owner }, first, request.query.tail);
      } finally {
        admitted.release();
      }
    },
  );

  // A stream is a hijacked response: server.close() would wait for it forever.
  app.addHook('preClose', (done) => {
    followers.shutdownAll();
    done();
  });
};

/** The last `n` lines of `text` (all of it when n is undefined). */
export function tailLines(text: string, n: number | undefined): string {
  if (n === undefined) return text;
  const lines = text.split('\n');
  const trailingNewline = text.endsWith('\n');
  if (trailingNewline) lines.pop();
  return lines.slice(-n).join('\n') + (trailingNewline && lines.length > 0 ? '\n' : '');
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

/**
 * Server-Sent Events until the run is over: first what is there (or its last
 * `tail` lines), then new chunks as the executor stores them, then `end`. Stops
 * early when the client goes away, and at `shutdown()` (the app is closing).
 */
class LogStream {
  /** Aborted when the stream must stop: the client left, or the app is closing. */
  private readonly stop = new AbortController();

  constructor(
    private readonly request: FastifyRequest,
    private readonly response: ServerResponse,
  ) {
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

  async run(
    executions: ExecutionRepository,
    target: { id: number; owner: number | undefined },
    first: LogState,
    tail: number | undefined,
  ): Promise<void> {
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
    let sentLength = 0; // UTF-16 code units of output sent so far
    let lastChunk = 0;
    let lastWrite = Date.now();
    const send = (text: string) => {
      if (text !== '') {
        this.write(sseEvent('log', text));
        lastWrite = Date.now();
      }
    };
    let state = first;
    // The first answer: everything so far, or its tail.
    const initial = state.final ?? state.chunks.map((c) => c.data).join('');
    send(tailLines(initial, tail));
    sentLength = initial.length;
    lastChunk = state.chunks.at(-1)?.id ?? 0;
    try {
      while (!signal.aborted) {
        if (state.final !== null) {
          // Finished: its output is the chunks we streamed, folded, plus whatever came last.
          send(state.final.slice(sentLength));
          this.write(sseEvent('end', JSON.stringify({ status: state.status, exit_code: state.exit_code })));
          break;
        }
        await sleep(FOLLOW_POLL_MS, signal);
        if (signal.aborted) break;
        state = await executions.followLogs(target.id, lastChunk, target.owner);
        if (signal.aborted) break;
        for (const chunk of state.chunks) {
          send(chunk.data);
          sentLength += chunk.data.length;
          lastChunk = chunk.id;
        }
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
