/**
 * Answers under load (@fastify/under-pressure). A pressure handler that returns a
 * body has it sent, and the request ends there; one that sends the reply itself and
 * returns nothing has under-pressure call `next()` after the answer, and the request
 * runs on unless Fastify already counts the reply as sent. The library's types only
 * allow void, though its README documents the returned body.
 */
import type { FastifyUnderPressureOptions } from '@fastify/under-pressure';
import type { FastifyReply, FastifyRequest } from 'fastify';

export type PressureHandler = NonNullable<FastifyUnderPressureOptions['pressureHandler']>;

/**
 * `handler` returns the body of the answer, or undefined to let the request through. It is
 * not asked while the app waits out its start-up (`sheddingWarmsUp`, app.ts): every
 * handler, the app's and a route's own, lets the request through then.
 */
export function answerUnderPressure(
  handler: (request: FastifyRequest, reply: FastifyReply, type: string) => object | undefined,
): PressureHandler {
  const answer = (request: FastifyRequest, reply: FastifyReply, type: string) =>
    request.server.sheddingWarmsUp(type) ? undefined : handler(request, reply, type);
  return answer as unknown as PressureHandler;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** True while a pressure of this type is not acted on: the app is still starting (app.ts). */
    sheddingWarmsUp(type: string): boolean;
  }
  interface FastifyContextConfig {
    /** A route's own answer under load (see answerUnderPressure). */
    pressureHandler?: PressureHandler;
  }
}
