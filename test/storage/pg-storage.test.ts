/**
 * Script bytes in PostgreSQL: the store (slices, missing and deleted content, the
 * transaction it writes in) and the one-time move of files from STORAGE_DIR.
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buffer } from 'node:stream/consumers';
import t from 'tap';
import { moveContents } from '../../src/storage/move-contents.ts';
import { ContentDeletedError, PgStorage } from '../../src/storage/pg-storage.ts';
import { testDatabase } from '../helpers/db.ts';
import { makeScript, makeUser } from '../helpers/fixtures.ts';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

t.test('content is stored uncompressed out of line, so slices read only their TOAST chunks', async (t) => {
  const { sql } = await testDatabase(t);
  const [row] = await sql`
    select attstorage from pg_attribute where attrelid = 'script_contents'::regclass and attname = 'content'
  `;
  t.equal(row?.attstorage, 'e', 'EXTERNAL');
});

t.test('put and open: the bytes come back exactly, slice by slice, with their size', async (t) => {
  const { db, repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const store = new PgStorage(db, 7);
  const bytes = Buffer.concat([
    Buffer.from('print("x")\r\n'),
    Buffer.from([0, 255, 128, 10]),
    Buffer.alloc(30, 1),
  ]);
  const script = await repos.transaction(async (tx) => {
    const s = await makeScript(tx, user.id, { file_size: bytes.length, sha256: sha256(bytes) });
    await store.put(tx.db, { script_id: s.id, user_id: user.id }, bytes);
    return s;
  });
  const opened = await store.open({ script_id: script.id, user_id: user.id });
  t.ok(opened);
  t.equal(opened!.size, bytes.length);
  const chunks: Buffer[] = [];
  for await (const chunk of opened!.stream) chunks.push(chunk as Buffer);
  t.same(Buffer.concat(chunks), bytes);
  t.ok(chunks.length >= Math.ceil(bytes.length / 7), 'read in slices of at most 7 bytes');
  t.ok(
    chunks.every((c) => c.length <= 7),
    'no slice is larger than asked',
  );
  for (const size of [1, 7, 14]) {
    const exact = Buffer.alloc(size, 65);
    const s = await makeScript(repos, user.id, { file_size: size });
    await store.put(db, { script_id: s.id, user_id: user.id }, exact);
    const back = await store.open({ script_id: s.id, user_id: user.id });
    t.same(await buffer(back!.stream), exact, `${size} bytes (slice boundaries)`);
  }
});

t.test('open is null for a missing script and for the wrong owner', async (t) => {
  const { db, repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const other = await makeUser(repos);
  const store = new PgStorage(db);
  const s = await makeScript(repos, user.id);
  await store.put(db, { script_id: s.id, user_id: user.id }, Buffer.from('print(1)\n'));
  t.equal(await store.open({ script_id: s.id + 1000, user_id: user.id }), null);
  t.equal(await store.open({ script_id: s.id, user_id: other.id }), null, 'the key carries the owner');
});

t.test('a script deleted while its content is read ends the stream with an error', async (t) => {
  const { db, repos, sql } = await testDatabase(t);
  const user = await makeUser(repos);
  const store = new PgStorage(db, 4);
  const s = await makeScript(repos, user.id);
  await store.put(db, { script_id: s.id, user_id: user.id }, Buffer.from('0123456789abcdef'));
  const opened = await store.open({ script_id: s.id, user_id: user.id });
  await sql`delete from scripts where id = ${s.id}`;
  await t.rejects(buffer(opened!.stream), ContentDeletedError);
  t.equal(await store.open({ script_id: s.id, user_id: user.id }), null, 'the cascade took the bytes');
});

t.test('bytes written in a transaction that rolls back are gone with the row', async (t) => {
  const { db, repos, sql } = await testDatabase(t);
  const user = await makeUser(repos);
  const store = new PgStorage(db);
  let id = 0;
  await t.rejects(
    repos.transaction(async (tx) => {
      const s = await makeScript(tx, user.id);
      id = s.id;
      await store.put(tx.db, { script_id: s.id, user_id: user.id }, Buffer.from('x'));
      throw new Error('boom');
    }),
    /boom/,
  );
  const [row] = await sql`select count(*)::int as n from script_contents where script_id = ${id}`;
  t.equal(row?.n, 0);
});

t.test('the schema refuses bytes of another user’s script and empty bytes', async (t) => {
  const { repos, sql } = await testDatabase(t);
  const user = await makeUser(repos);
  const other = await makeUser(repos);
  const s = await makeScript(repos, user.id);
  const refused = (query: Promise<unknown>) =>
    query.then(
      () => null,
      (error: { constraint_name?: string }) => error.constraint_name,
    );
  t.equal(
    await refused(
      sql`insert into script_contents (script_id, user_id, content) values (${s.id}, ${other.id}, '\\x01')`,
    ),
    'fk_script_contents_script',
  );
  t.equal(
    await refused(
      sql`insert into script_contents (script_id, user_id, content) values (${s.id}, ${user.id}, '\\x')`,
    ),
    'ck_script_contents_not_empty',
  );
});

t.test(
  'move-contents moves files in batches, checks hashes, reports the rest, and can run again',
  async (t) => {
    const { db, repos, sql } = await testDatabase(t);
    const dir = await mkdtemp(path.join(tmpdir(), 'dollarclub-move-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const user = await makeUser(repos);
    const legacy = async (content: Buffer | null, hash?: string, key?: string) => {
      const id = randomUUID();
      const filePath = key ?? `${id.slice(0, 2)}/${id}.py`;
      if (content !== null) {
        await mkdir(path.join(dir, path.dirname(filePath)), { recursive: true });
        await writeFile(path.join(dir, filePath), content);
      }
      const bytes = content ?? Buffer.from('gone');
      return makeScript(repos, user.id, {
        file_path: filePath,
        file_size: bytes.length,
        sha256: hash ?? sha256(bytes),
      });
    };
    const good = [];
    for (let i = 0; i < 7; i++) good.push(await legacy(Buffer.from(`print(${i})\n`.repeat(i + 1))));
    const missing = await legacy(null);
    const tampered = await legacy(
      Buffer.from('print("changed")\n'),
      sha256(Buffer.from('print("original")\n')),
    );
    const outside = await legacy(null, undefined, '../../etc/passwd');
    const modern = await makeScript(repos, user.id, { file_path: null });

    const batches: number[] = [];
    const report = await moveContents(db, {
      storageDir: dir,
      batchFiles: 3,
      onBatch: (r) => batches.push(r.moved),
    });
    t.equal(report.moved, 7);
    t.same(report.missing, [{ script_id: missing.id, file_path: (await pathOf(missing.id))! }]);
    t.same(report.mismatched, [{ script_id: tampered.id, file_path: (await pathOf(tampered.id))! }]);
    t.same(report.invalid, [{ script_id: outside.id, file_path: '../../etc/passwd' }]);
    t.ok(batches.length >= 3, `in batches (${batches.join(', ')})`);

    const store = new PgStorage(db);
    for (const [i, s] of good.entries()) {
      const opened = await store.open({ script_id: s.id, user_id: user.id });
      t.equal((await buffer(opened!.stream)).toString(), `print(${i})\n`.repeat(i + 1));
      t.equal(await pathOf(s.id), null, 'the moved row forgets its file path');
    }
    for (const s of [missing, tampered, outside]) {
      t.equal(await store.open({ script_id: s.id, user_id: user.id }), null, 'not moved');
      t.not(await pathOf(s.id), null, 'keeps its path for the operator');
    }
    t.equal(await store.open({ script_id: modern.id, user_id: user.id }), null);

    const again = await moveContents(db, { storageDir: dir });
    t.equal(again.moved, 0, 'a second run moves nothing more');
    t.equal(again.missing.length + again.mismatched.length + again.invalid.length, 3, 'and reports the same');
    const [count] = await sql`select count(*)::int as n from script_contents`;
    t.equal(count?.n, 7);

    async function pathOf(id: number): Promise<string | null> {
      const [row] = await sql`select file_path from scripts where id = ${id}`;
      return (row?.file_path as string | null) ?? null;
    }
  },
);
