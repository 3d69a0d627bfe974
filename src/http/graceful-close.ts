/**
 * How the API's HTTP connections end when the app closes (SIGTERM), so that no
 * request that reached the server goes unanswered and no kept-alive connection holds
 * the process open:
 *
 * - A request that arrives after the close began is answered 503 SERVICE_UNAVAILABLE
 *   (problem+json, Retry-After) with `Connection: close`: the client retries elsewhere.
 * - A request already under way gets its own answer, with `Connection: close`, and
 *   Node ends its connection after it.
 * - An idle connection is closed at once — but only once it is really idle. Node's
 *   `server.close()` destroys every connection without a request in progress at that
 *   instant, also one whose next request is on its way or already in the socket's
 *   receive buffer, unread because the event loop has not polled yet: the kernel
 *   answers unread data with a reset, and the client sees ECONNRESET for a request it
 *   had sent (issue 7, item 9: 19 of 50). Here an idle connection is closed
 *   IDLE_LINGER_MS after the close began (a request that arrives meanwhile is answered
 *   503), after a full poll of the event loop has read what had arrived, and only if
 *   nothing had: no request in progress, no byte read since its last answer. A
 *   connection that then holds the start of a request gets PARTIAL_REQUEST_GRACE_MS to
 *   complete it (it is then answered 503), or is closed. (A request written after the
 *   connection closed never reached the server: that race is HTTP/1.1's own, and the
 *   client's to retry; the linger makes it a race against a client that was writing
 *   when the signal came, not one against our event loop.)
 *
 * Node's `server.close()` calls `server.closeIdleConnections()` (Node 19+); this
 * replaces that method on the app's server, so Fastify's close (`app.close()`) drains
 * as above, with `forceCloseConnections` left at its default.
 */
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { sendProblem, shuttingDown } from './errors.ts';

/** How long a connection holding half a request head may take to complete it once closing. */
export const PARTIAL_REQUEST_GRACE_MS = 2_000;

/** How long after the close began idle connections stay open for a request already on its way. */
export const IDLE_LINGER_MS = 200;

interface ConnectionState {
  /** Requests read and not yet answered (more than one when pipelined). */
  inFlight: number;
  /** socket.bytesRead when its last answer was finished: more since means a new request began. */
  readWhenIdle: number;
  /** A close of this connection is scheduled. */
  checking: boolean;
}

export function installGracefulClose(app: FastifyInstance): void {
  const server: Server = app.server;
  const connections = new Map<Socket, ConnectionState>();
  let closing = false;
  let closingSince = 0;

  server.on('connection', (socket: Socket) => {
    connections.set(socket, { inFlight: 0, readWhenIdle: 0, checking: false });
    socket.once('close', () => connections.delete(socket));
  });
  // After Fastify's own listener (added when the server was made), for every request.
  server.on('request', (request, response) => {
    const socket = request.socket;
    const state = connections.get(socket);
    if (state === undefined) return;
    state.inFlight += 1;
    response.once('close', () => {
      state.inFlight -= 1;
      state.readWhenIdle = socket.bytesRead;
      if (closing) closeWhenIdle(socket, state);
    });
  });

  /**
   * Closes `socket` once it is idle, no sooner than IDLE_LINGER_MS into the close and
   * after a whole turn of the event loop (two setImmediate: the second runs after a
   * poll phase that began after the first), so bytes already received have been read,
   * and a request among them has begun.
   */
  function closeWhenIdle(socket: Socket, state: ConnectionState, graceUntil?: number): void {
    if (state.checking || socket.destroyed) return;
    state.checking = true;
    const linger = Math.max(0, closingSince + IDLE_LINGER_MS - Date.now());
    setTimeout(
      () =>
        setImmediate(() =>
          setImmediate(() => {
            state.checking = false;
            if (socket.destroyed || state.inFlight > 0) return; // its answer's close checks again
            if (socket.bytesRead === state.readWhenIdle) {
              socket.destroy(); // nothing unread: a clean FIN
              return;
            }
            // Part of a request head: give it a moment to complete (then it is answered 503).
            const until = graceUntil ?? Date.now() + PARTIAL_REQUEST_GRACE_MS;
            if (Date.now() >= until) {
              socket.destroy();
              return;
            }
            setTimeout(() => closeWhenIdle(socket, state, until), 50).unref();
          }),
        ),
      linger,
    );
  }

  function beginClosing(): void {
    if (closing) return;
    closing = true;
    closingSince = Date.now();
  }

  server.closeIdleConnections = () => {
    beginClosing();
    for (const [socket, state] of connections) if (state.inFlight === 0) closeWhenIdle(socket, state);
  };

  app.addHook('preClose', (done) => {
    beginClosing();
    done();
  });
  app.addHook('onRequest', (request, reply, done) => {
    if (!closing) return done();
    void sendProblem(
      reply.header('connection', 'close').header('retry-after', '5'),
      shuttingDown(request.id),
    );
  });
  // Answers of requests that began before the close end their connections too — unless
  // another request is pipelined behind this one: Node drops the answers queued after a
  // `Connection: close`, so the last one says it (a refused one always does, above).
  app.addHook('onSend', (request, reply, payload, done) => {
    if (closing && (connections.get(request.raw.socket)?.inFlight ?? 0) <= 1)
      reply.header('connection', 'close');
    done(null, payload);
  });
}
