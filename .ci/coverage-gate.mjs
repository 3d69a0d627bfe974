#!/usr/bin/env node
// The coverage gate: line coverage of the core layers (src/db, src/repositories,
// src/domain, src/services) must not fall below .ci/coverage-thresholds.json.
// tap writes the per-file summary (.tap/report/coverage-summary.json, from the
// `json-summary` coverage report in package.json); tap itself runs with
// allow-incomplete-coverage because the HTTP layer, the executor and the entry
// points are covered by process-level tests that tap cannot instrument.
// A file of a gated folder that no test loaded fails the gate by name: it would
// otherwise be missing from the summary and silently count as nothing.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const thresholds = JSON.parse(readFileSync(path.join(root, '.ci/coverage-thresholds.json'), 'utf8'));
// The summary to check: the argument (CI keeps the embedded run's), else tap's last one.
const summaryFile = path.resolve(process.argv[2] ?? path.join(root, '.tap/report/coverage-summary.json'));
let summary;
try {
  summary = JSON.parse(readFileSync(summaryFile, 'utf8'));
} catch {
  console.error(
    `coverage gate: ${path.relative(root, summaryFile)} is missing: run the whole suite with \`npm test\` first`,
  );
  process.exit(1);
}

const files = (dir) =>
  readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) return files(full);
    return name.endsWith('.ts') && !name.endsWith('.d.ts') ? [full] : [];
  });

let failed = false;
for (const [dir, minimum] of Object.entries(thresholds)) {
  if (dir.startsWith('_')) continue;
  let total = 0;
  let covered = 0;
  for (const file of files(path.join(root, dir))) {
    const entry = summary[file];
    if (!entry) {
      console.error(`coverage gate: ${path.relative(root, file)} was not loaded by any test`);
      failed = true;
      continue;
    }
    total += entry.lines.total;
    covered += entry.lines.covered;
  }
  const pct = total === 0 ? 100 : (100 * covered) / total;
  const ok = pct >= minimum;
  if (!ok) failed = true;
  console.log(`coverage gate: ${dir} lines ${pct.toFixed(2)}% (minimum ${minimum}%) ${ok ? 'ok' : 'FAILED'}`);
}
process.exit(failed ? 1 : 0);
