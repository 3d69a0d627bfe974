import { Writable } from 'node:stream';
import Fastify, { type FastifyBaseLogger, type FastifyRequest, LogController } from 'fastify';
import { pino } from 'pino';
import t from 'tap';
import { RequestLogger, requestLoggerFactory } from '../../src/http/request-logger.ts';
import { REDACT_PATHS } from '../../src/logger.ts';

/** A Fastify app with the app's child logger factory over a redacting pino at `level`, and its lines. */
async function server(level: pino.LevelWithSilent) {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n')) if (line.trim() !== '') lines.push(JSON.parse(line));
      done();
    },
  });
  const log = pino({ level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, stream);
  const app = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    childLoggerFactory: requestLoggerFactory,
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'request_id' }),
  });
  const seen: { log?: RequestLogger } = {};
  const remember = (request: FastifyRequest) => {
    seen.log = request.log as unknown as RequestLogger;
  };
  return { app, lines, seen, remember };
}

t.test('a request that writes nothing never makes its pino child', async (t) => {
  const { app, lines, seen, remember } = await server('warn');
  app.get('/quiet', async (request) => {
    remember(request);
    request.log.info('below the level');
    request.log.debug({ some: 'thing' }, 'below the level');
    request.log.trace('below the level');
    return { ok: true };
  });
  const res = await app.inject('/quiet');
  t.equal(res.statusCode, 200);
  t.ok(seen.log instanceof RequestLogger, 'the request logger is a RequestLogger');
  t.equal(seen.log?.materialised, false, 'no child was made');
  t.same(lines, [], 'nothing written');
  t.equal(seen.log?.level, 'warn', 'its level is the parent level');
});

t.test('a line a request writes carries its request id, and secrets are redacted', async (t) => {
  const { app, lines, seen, remember } = await server('warn');
  app.get('/loud', async (request) => {
    remember(request);
    request.log.warn({ user: { password: 'hunter2' }, detail: 'x' }, 'something to say');
    request.log.error(new Error('an error'));
    return { ok: true };
  });
  const res = await app.inject('/loud');
  t.equal(res.statusCode, 200);
  t.equal(seen.log?.materialised, true, 'the child was made for the first line');
  t.equal(lines.length, 2, 'both lines written');
  const [warn, error] = lines;
  t.match(warn, { level: 40, msg: 'something to say', user: { password: '[redacted]' }, detail: 'x' });
  t.match(error, { level: 50, err: { message: 'an error' } });
  t.ok(typeof warn?.request_id === 'string' && warn.request_id !== '', 'the request id is bound');
  t.equal(error?.request_id, warn?.request_id, 'one id for both lines');
  t.notOk(JSON.stringify(lines).includes('hunter2'), 'the password is nowhere');
});

t.test("a child of the request's logger keeps the request id and adds its bindings", async (t) => {
  const { app, lines, remember, seen } = await server('warn');
  app.get('/child', async (request) => {
    remember(request);
    request.log.child({ step: 'fetch' }).warn('from a child');
    return { ok: true };
  });
  await app.inject('/child');
  t.equal(lines.length, 1);
  t.match(lines[0], { msg: 'from a child', step: 'fetch', request_id: /.+/ });
  t.same(seen.log?.bindings(), { request_id: lines[0]?.request_id }, 'its bindings are the request id');
});

t.test("a route's own log level decides, above or below the app's", async (t) => {
  const { app, lines, seen, remember } = await server('warn');
  app.get('/chatty', { logLevel: 'debug' }, async (request) => {
    remember(request);
    request.log.trace('still below');
    request.log.debug('now written');
    return { ok: true };
  });
  app.get('/muted', { logLevel: 'silent' }, async (request) => {
    remember(request);
    request.log.fatal('never written');
    return { ok: true };
  });
  app.get('/strict', { logLevel: 'error' }, async (request) => {
    remember(request);
    request.log.warn('below the route level');
    return { ok: true };
  });
  await app.inject('/strict');
  t.equal(seen.log?.materialised, false, 'a warn line under an error route makes no child');
  t.equal(seen.log?.isLevelEnabled('warn'), false);
  t.equal(seen.log?.isLevelEnabled('error'), true);
  t.same(lines, [], 'and writes nothing');
  await app.inject('/chatty');
  t.equal(seen.log?.materialised, true, 'a debug line under a debug route makes the child');
  t.equal(seen.log?.level, 'debug', "the route's level");
  t.same(
    lines.map((l) => l.msg),
    ['now written'],
    'debug is written under a debug route, trace is not',
  );
  await app.inject('/muted');
  t.equal(seen.log?.materialised, false, 'a silent route makes no child');
  t.equal(lines.length, 1, 'and writes nothing, even fatal');
});

t.test('a request may raise its own level', async (t) => {
  const { app, lines, remember, seen } = await server('warn');
  app.get('/raise', async (request) => {
    remember(request);
    request.log.debug('before');
    request.log.level = 'debug';
    request.log.debug('after');
    return { ok: true };
  });
  app.get('/other', async (request) => {
    remember(request);
    request.log.debug('another request');
    return { ok: true };
  });
  await app.inject('/raise');
  t.equal(seen.log?.level, 'debug');
  await app.inject('/other');
  t.same(
    lines.map((l) => l.msg),
    ['after'],
    'only the line after the change, and only in that request',
  );
  t.equal(seen.log?.level, 'warn', "the next request has the app's level");
});
