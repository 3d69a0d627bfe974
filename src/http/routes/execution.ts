/**
 * Runs: queue, cancel, output (plain or followed over Server-Sent Events), and
 * what is running now. Ownership as everywhere: someone else's script is a 404.
 */

import type { ServerResponse } from 'node:http';
import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import type { ExecutionRepository, LogState } from '../../repositories/execution-repository.js';
import type { RouteOptions } from '../context.js';
import { problem } from '../errors.js';
import { ownerScope } from '../plugins/auth.js';
import { IdParams, problems } from '../schemas/common.js';
import { Script } from '../schemas/script.js';

/** How often a follower looks for new output. */
export const FOLLOW_POLL_MS = 500;
const HEARTBEAT_MS = 15_000;

export const executionRoutes: FastifyPluginAsyncTypebox<RouteOptions> = async (app, { ctx }) => {
  const executions = ctx.repos.executions;

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
          '(`{"status", "exit_code"}`) closes the stream when the run is over.',
        params: IdParams,
        querystring: Type.Object(
          {
            tail: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
            follow: Type.Optional(Type.Boolean()),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.String({
            description: 'the output (text/plain), or an event stream (text/event-stream)',
          }),
          ...problems(400, 401, 404, 503),
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
      reply.hijack();
      await streamLogs(request, reply.raw, executions, { id, owner }, first, request.query.tail);
    },
  );
};

/** The last `n` lines of `text` (all of it when n is undefined). */
export function tailLines(text: string, n: number | undefined): string {
  if (n === undefined) return text;
  const lines = text.split('\n');
  const trailingNewline = text.endsWith('\n');
  if (trailingNewline) lines.pop();
  return lines.slice(-n).join('\n') + (trailingNewline && lines.length > 0 ? '\n' : '');
}

function event(name: string, data: string): string {
  return `event: ${name}\n${data
    .split('\n')
    .map((line) => `data: ${line}`)
    .join('\n')}\n\n`;
}

/**
 * Server-Sent Events until the run is over: first what is there (or its last
 * `tail` lines), then new chunks as the executor stores them, then `end`. Stops
 * early when the client goes away.
 */
async function streamLogs(
  request: FastifyRequest,
  response: ServerResponse,
  executions: ExecutionRepository,
  target: { id: number; owner: number | undefined },
  first: LogState,
  tail: number | undefined,
): Promise<void> {
  let closed = false;
  request.raw.on('close', () => {
    closed = true;
  });
  response.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
    'x-request-id': request.id,
  });
  let sentLength = 0; // UTF-16 code units of output sent so far
  let lastChunk = 0;
  let lastWrite = Date.now();
  const send = (text: string) => {
    if (text !== '') {
      response.write(event('log', text));
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
    while (!closed) {
      if (state.final !== null) {
        // Finished: its output is the chunks we streamed, folded, plus whatever came last.
        send(state.final.slice(sentLength));
        response.write(event('end', JSON.stringify({ status: state.status, exit_code: state.exit_code })));
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, FOLLOW_POLL_MS));
      if (closed) break;
      state = await executions.followLogs(target.id, lastChunk, target.owner);
      for (const chunk of state.chunks) {
        send(chunk.data);
        sentLength += chunk.data.length;
        lastChunk = chunk.id;
      }
      if (Date.now() - lastWrite > HEARTBEAT_MS) {
        response.write(': keep-alive\n\n');
        lastWrite = Date.now();
      }
    }
  } catch (err) {
    // The status line is sent: report in the stream, as problem+json data.
    request.log.warn({ err }, 'log stream ended by an error');
    const code = (err as { code?: string }).code === 'NOT_FOUND' ? 'NOT_FOUND' : 'DATABASE_UNAVAILABLE';
    const status = code === 'NOT_FOUND' ? 404 : 503;
    response.write(
      event(
        'error',
        JSON.stringify(problem(status, code, 'the log stream stopped', { request_id: request.id })),
      ),
    );
  } finally {
    response.end();
  }
}
