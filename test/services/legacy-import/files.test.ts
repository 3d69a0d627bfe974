/**
 * The file step of import-legacy: files read and hashed from a real folder, and the
 * binary COPY rows they become, loaded into a real PostgreSQL table exactly as the
 * import loads them (COPY … FROM STDIN WITH (FORMAT binary) of import_files).
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { FileReader } from '../../../src/services/legacy-import/files.ts';
import { testDatabase } from '../../helpers/db.ts';

async function folder(t: Test) {
  const dir = await mkdtemp(path.join(tmpdir(), 'dollarclub-legacy-files-'));
  t.teardown(() => rm(dir, { recursive: true }));
  return dir;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

t.test('read: bytes and sha256 of a file; a missing file or a directory gives nulls', async (t) => {
  const dir = await folder(t);
  const content = Buffer.from('print("hello")\n');
  await writeFile(path.join(dir, 'a.py'), content);
  await mkdir(path.join(dir, 'b.py'));
  const reader = new FileReader(dir);
  t.same(reader.read({ id: 1, source_name: 'a.py' }), { id: 1, bytes: content, sha256: sha256(content) });
  t.same(reader.read({ id: 2, source_name: 'missing.py' }), { id: 2, bytes: null, sha256: null });
  t.same(reader.read({ id: 3, source_name: 'b.py' }), { id: 3, bytes: null, sha256: null }, 'a directory');
  t.same(
    reader.read({ id: 4, source_name: 'a.py/x' }),
    { id: 4, bytes: null, sha256: null },
    'a path through a file (ENOTDIR)',
  );
  await writeFile(path.join(dir, 'empty.py'), '');
  const nothing = reader.read({ id: 5, source_name: 'empty.py' });
  t.equal(nothing.bytes?.length, 0, 'an empty file is read as zero bytes (the import refuses it)');
  t.equal(nothing.sha256, sha256(Buffer.alloc(0)));
});

t.test('read: an I/O error other than a missing file is thrown', async (t) => {
  const reader = new FileReader(await folder(t));
  t.throws(() => reader.read({ id: 1, source_name: 'x'.repeat(300) }), { code: 'ENAMETOOLONG' });
});

t.test('copy: the files as binary COPY rows of import_files, in order, bytes as they are', async (t) => {
  const db = await testDatabase(t);
  const dir = await folder(t);
  const files = Array.from({ length: 700 }, (_, i) => ({ id: 1000 + i, source_name: `${randomUUID()}.py` }));
  const contents = new Map<number, Buffer>();
  for (const [i, f] of files.entries()) {
    if (i % 100 === 7) continue; // missing
    // Bytes a text COPY would have to escape (tabs, new lines, backslashes, NULs, non-UTF-8).
    const bytes = i === 3 ? randomBytes(256 * 1024) : Buffer.from(`x\t\\\n\0\xff${i}`, 'latin1');
    contents.set(f.id, bytes);
    await writeFile(path.join(dir, f.source_name), bytes);
  }
  const reported: number[] = [];
  // Slices of 64: the 700 files arrive in 11 writes, one of them 256 KiB.
  const reader = new FileReader(dir, 64);
  const rows = await db.sql.begin(async (tx) => {
    await tx`create temp table import_files (id integer not null, sha256 text, size bigint, content bytea) on commit drop`;
    await reader.copy(files, await tx`copy import_files from stdin with (format binary)`.writable(), (n) =>
      reported.push(n),
    );
    return tx<{ id: number; sha256: string | null; size: number | null; content: Buffer | null }[]>`
      select id, sha256, size, content from import_files order by id
    `;
  });
  t.equal(rows.length, files.length, 'one row per file');
  t.equal(
    reported.reduce((a, b) => a + b, 0),
    files.length,
    'progress counts every file',
  );
  t.equal(reported.length, Math.ceil(files.length / 64), 'once per slice');
  let mismatches = 0;
  for (const row of rows) {
    const bytes = contents.get(row.id);
    const expected =
      bytes === undefined
        ? { sha256: null, size: null, content: null }
        : { sha256: sha256(bytes), size: bytes.length, content: bytes };
    if (
      row.sha256 !== expected.sha256 ||
      row.size !== expected.size ||
      !(row.content === null ? expected.content === null : row.content.equals(expected.content!))
    )
      mismatches++;
  }
  t.equal(mismatches, 0, 'every row has the file’s sha256, size and bytes, or nulls for a missing file');
  t.equal(rows.filter((r) => r.content === null).length, 7, 'the 7 missing files are null rows');
});

t.test('copy: an empty page is an empty COPY', async (t) => {
  const db = await testDatabase(t);
  const reader = new FileReader(await folder(t));
  const [row] = await db.sql.begin(async (tx) => {
    await tx`create temp table import_files (id integer not null, sha256 text, size bigint, content bytea) on commit drop`;
    await reader.copy([], await tx`copy import_files from stdin with (format binary)`.writable(), () => {});
    return tx<{ n: number }[]>`select count(*)::int as n from import_files`;
  });
  t.equal(row!.n, 0);
});
