/**
 * The driver patch (src/db/driver-patches/, applied by patch-package at install): postgres
 * 3.4.9 loses a connection for good when the connection closes while a statement's write is
 * still waiting for its turn (the driver batches small writes with setImmediate). Its close
 * handler cancels that write but keeps the handle and the unsent bytes, so every later write
 * on the connection, the next start-up message included, is held back: the reconnected
 * connection never speaks, and each statement given to it waits for its time limit. Seen
 * when a server restart or pg_terminate_backend meets a query about to go out (the
 * pre-ping's). Here the close is made certain: the driver's socket closes in the
 * same turn of the event loop as the statement is issued, after it.
 */
import type { Socket } from 'node:net';
import net from 'node:net';
import postgres from 'postgres';
import t from 'tap';
import { testDatabase } from '../helpers/db.ts';

t.test(
  'a connection closed while a write waits for its turn reconnects and answers the next statement',
  async (t) => {
    const { url } = await testDatabase(t);
    const sockets: Socket[] = [];
    const { hostname, port } = new URL(url);
    const sql = postgres(url, {
      max: 1,
      onnotice: () => {},
      // Not in the driver's types, but a documented option (custom sockets); kept to destroy one.
      ...({
        socket: () => {
          const socket = net.connect({ host: hostname, port: Number(port) });
          sockets.push(socket);
          return socket;
        },
      } as object),
    });
    t.teardown(() => sql.end({ timeout: 1 }));
    t.same(await sql`select 1 as n`, [{ n: 1 }], 'the connection works');

    // The driver batches a statement's bytes and sends them from a setImmediate; the close
    // must come first. Holding that one setImmediate back (it is never run) makes the order
    // certain: the statement is in the batch, and the socket closes.
    const realSetImmediate = globalThis.setImmediate;
    let held = 0;
    globalThis.setImmediate = ((fn: (...a: unknown[]) => void, ...args: unknown[]) => {
      if (held > 0) return realSetImmediate(fn, ...args);
      held++;
      return realSetImmediate(() => {});
    }) as typeof setImmediate;
    let lost: Promise<unknown>;
    try {
      lost = sql`select 2 as n`.execute().catch((error: unknown) => error);
      for (let i = 0; i < 100 && held === 0; i++) await Promise.resolve();
    } finally {
      globalThis.setImmediate = realSetImmediate;
    }
    t.equal(held, 1, 'the statement’s bytes wait for a setImmediate');
    sockets.at(-1)!.destroy();
    t.match(await lost, { code: 'CONNECTION_CLOSED' }, 'the statement whose write was cut off fails');

    const next = await Promise.race([
      sql`select 3 as n`.then((rows) => ({ rows })),
      new Promise<{ timeout: true }>((resolve) => setTimeout(() => resolve({ timeout: true }), 5000).unref()),
    ]);
    t.same(
      next,
      { rows: [{ n: 3 }] },
      'the next statement reconnects and gets its answer (not held back for ever)',
    );
    t.equal(sockets.length, 2, 'on a new socket');
  },
);
