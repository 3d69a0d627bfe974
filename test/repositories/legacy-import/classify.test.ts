/**
 * The set-wise rules of import-legacy on staged rows (the staging tables filled here
 * by SQL, as the COPY from the old database fills them) and the refusals they report:
 * against a real migrated database, in transactions that are thrown away.
 */
import { randomUUID } from 'node:crypto';
import t from 'tap';
import type { TransactionSql } from '../../../src/db/client.ts';
import { LegacyClassifier } from '../../../src/repositories/legacy-import/classify.ts';
import { LegacyStaging } from '../../../src/repositories/legacy-import/staging.ts';
import { rolledBack, testDatabase } from '../../helpers/db.ts';

const BCRYPT = '$2b$04$GNgwxBRC6HqkkgKhtBD2zuUVJSqKNJTaLM2poRTYiGFtSxMv7Y3cu';
const NOW = new Date('2026-12-01T10:00:00Z');

async function stageUser(tx: TransactionSql, id: number, email: string) {
  await tx`
    insert into legacy_users (id, email, username, hashed_password, auth_provider, created_at)
    values (${id}, ${email}, ${`user${id}`}, ${BCRYPT}, 'email', '2024-01-01T00:00:00Z')
  `;
}

async function stageScript(
  tx: TransactionSql,
  id: number,
  userId: number,
  filename: string,
  status = 'completed',
) {
  await tx`
    insert into legacy_scripts (id, user_id, filename, original_filename, file_size, file_extension, status, created_at)
    values (${id}, ${userId}, ${filename}, 'x.py', 10, '.py', ${status}, '2024-02-01T00:00:00Z')
  `;
}

t.test('scripts: the filename rule, names equal after lower-casing, empty and missing files', async (t) => {
  const db = await testDatabase(t);
  const uuid = randomUUID();
  const result = await rolledBack(db, async (tx) => {
    const staging = new LegacyStaging(tx);
    const classifier = new LegacyClassifier(tx);
    await staging.begin();
    await stageUser(tx, 1, 'one@example.com');
    await stageScript(tx, 10, 1, `${uuid.toUpperCase()}.PY`);
    await stageScript(tx, 11, 1, `${uuid}.py`); // the same name as 10's once lower-cased
    await stageScript(tx, 12, 1, `${randomUUID()}.py`, 'uploaded');
    await stageScript(tx, 13, 1, `${randomUUID()}.py`); // its file will be empty
    await stageScript(tx, 14, 1, `${randomUUID()}.py`); // its file will be missing
    await stageScript(tx, 15, 1, `${randomUUID().replace(/-/g, 'g')}.py`); // not hex
    await stageScript(tx, 16, 1, `${randomUUID()}0.py`); // 37 characters before the dot
    await stageScript(tx, 17, 1, `${randomUUID()}.pyc`);
    await classifier.classifyUsers();
    const classified = await classifier.classifyScripts(NOW);
    const files = await staging.filesToRead(0, 100);
    await tx`
      insert into import_files (id, sha256, size, content)
      values (10, ${'a'.repeat(64)}, 3, '\\x616263'), (12, ${'b'.repeat(64)}, 3, '\\x616263'),
        (13, ${'c'.repeat(64)}, 0, '\\x'), (14, null, null, null)
    `;
    await staging.filesLoaded();
    const applied = await classifier.applyFiles();
    const rows = await tx<
      { id: number; outcome: string; reason: string | null; run: boolean; filename: string }[]
    >`
      select id, outcome, reason, run_id is not null as run, filename from import_scripts order by id
    `;
    return { classified, applied, files, rows: rows.map((r) => ({ ...r })) };
  });
  t.same(result.classified, { import: 4, present: 0, refused: 4 });
  t.same(
    result.files.map((f) => f.id),
    [10, 12, 13, 14],
    'the files of the scripts to import are read, by the name they had',
  );
  t.equal(result.files[0]!.source_name, `${uuid.toUpperCase()}.PY`);
  t.same(result.applied, { import: 2, present: 0, refused: 6 });
  const byId = Object.fromEntries(result.rows.map((r) => [r.id, r]));
  t.same(byId[10], { id: 10, outcome: 'import', reason: null, run: true, filename: `${uuid}.py` });
  t.equal(
    byId[11]!.reason,
    "filename is the same as script 10's after lower-casing",
    'the lowest id keeps the name',
  );
  t.same([byId[12]!.outcome, byId[12]!.run], ['import', false], 'a script that never ran gets no run id');
  t.match(byId[13], { outcome: 'refused', run: false, reason: `file is empty: ${byId[13]!.filename}` });
  t.match(byId[14], { outcome: 'refused', run: false, reason: `file missing: ${byId[14]!.filename}` });
  for (const id of [15, 16]) t.equal(byId[id]!.reason, 'filename is not <uuid><extension>', `script ${id}`);
  t.equal(byId[17]!.reason, 'filename is not <uuid><extension>');
});

t.test('refusals: the CSV lists every refused row, the counts group reasons that name an id', async (t) => {
  const db = await testDatabase(t);
  const { csv, counts } = await rolledBack(db, async (tx) => {
    const staging = new LegacyStaging(tx);
    const classifier = new LegacyClassifier(tx);
    await staging.begin();
    await stageUser(tx, 1, 'Same@example.com');
    await stageUser(tx, 2, 'same@example.com');
    await stageUser(tx, 3, 'SAME@example.com');
    await stageScript(tx, 20, 2, `${randomUUID()}.py`);
    await classifier.classifyUsers();
    await classifier.classifyScripts(NOW);
    let text = '';
    for await (const chunk of await staging.refusalsCsv()) text += String(chunk);
    return { csv: text, counts: await staging.refusalCounts() };
  });
  t.same(csv.trim().split('\n'), [
    'kind,legacy_id,reason',
    "user,2,email is the same as user 1's after lower-casing (the older account is kept)",
    "user,3,email is the same as user 1's after lower-casing (the older account is kept)",
    "script,20,its user 2 is refused: email is the same as user 1's after lower-casing (the older account is kept)",
  ]);
  t.same(
    counts.map((c) => ({ ...c })),
    [
      {
        kind: 'user',
        reason: "email is the same as user N's after lower-casing (the older account is kept)",
        count: 2,
      },
      { kind: 'script', reason: 'its user N is refused', count: 1 },
    ],
  );
});

t.test('run ids: a reserved block gives old script N the run id base + N, past the sequence', async (t) => {
  const db = await testDatabase(t);
  const result = await rolledBack(db, async (tx) => {
    const staging = new LegacyStaging(tx);
    const classifier = new LegacyClassifier(tx);
    await staging.begin();
    const [before] = await tx<
      { n: number }[]
    >`select nextval(pg_get_serial_sequence('script_runs', 'id')) as n`;
    await stageUser(tx, 1, 'one@example.com');
    await stageScript(tx, 100, 1, `${randomUUID()}.py`);
    await stageScript(tx, 250, 1, `${randomUUID()}.py`, 'uploaded');
    await stageScript(tx, 300, 1, `${randomUUID()}.py`, 'failed');
    await classifier.classifyUsers();
    const base = await classifier.reserveRunIds();
    await classifier.classifyScripts(NOW, base);
    const runs = await tx<
      { id: number; run_id: number | null }[]
    >`select id, run_id from import_scripts order by id`;
    const [next] = await tx<
      { n: number }[]
    >`select nextval(pg_get_serial_sequence('script_runs', 'id')) as n`;
    return { before: before!.n, base, runs: runs.map((r) => ({ ...r })), next: next!.n };
  });
  t.equal(result.base, result.before + 1 - 100, 'the block starts at the next value, for the lowest old id');
  t.same(result.runs, [
    { id: 100, run_id: result.before + 1 },
    { id: 250, run_id: null },
    { id: 300, run_id: result.before + 201 },
  ]);
  t.equal(result.next, result.before + 202, 'the sequence is past the block');

  const none = await rolledBack(db, async (tx) => {
    await new LegacyStaging(tx).begin();
    return new LegacyClassifier(tx).reserveRunIds();
  });
  t.equal(none, null, 'no old script, no block');
});
