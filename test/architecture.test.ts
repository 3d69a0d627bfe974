/**
 * The layers of docs/architecture.md, kept: an import graph read from the TypeScript
 * sources (the compiler's own pre-processor, no new dependency) fails this test when a
 * layer imports one it must not — HTTP reaching a repository or the pool, a repository
 * reaching HTTP or a service, the domain reaching anything with I/O.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import ts from 'typescript';

const SRC = path.resolve(import.meta.dirname, '../src');

/** Top-level modules every layer may use: configuration (and its schema), logging, metrics, /proc parsing. */
const SHARED = new Set(['config.ts', 'config-schema.ts', 'logger.ts', 'metrics.ts', 'proc.ts']);
/** Entry points and the wiring of a process: they may import anything, and nothing imports them but each other. */
const ENTRY = new Set([
  'main.ts',
  'worker.ts',
  'cli.ts',
  'migrate-cli.ts',
  'cli-password.ts',
  'boot.ts',
  'compose.ts',
  'maintenance.ts',
]);

type Layer =
  | 'domain'
  | 'db'
  | 'repositories'
  | 'storage'
  | 'services'
  | 'http'
  | 'scheduler'
  | 'executor'
  | 'shared'
  | 'entry';

/** What each layer may import (itself always). */
const ALLOWED: Record<Layer, Layer[]> = {
  domain: [],
  shared: ['domain'],
  db: ['domain', 'shared'],
  repositories: ['domain', 'db', 'shared'],
  storage: ['domain', 'db', 'shared'],
  services: ['domain', 'db', 'repositories', 'storage', 'shared'],
  http: ['domain', 'services', 'shared'],
  scheduler: ['domain', 'db', 'repositories', 'services', 'shared'],
  executor: ['domain', 'db', 'repositories', 'storage', 'services', 'shared'],
  entry: [
    'domain',
    'db',
    'repositories',
    'storage',
    'services',
    'http',
    'scheduler',
    'executor',
    'shared',
    'entry',
  ],
};

/** Single imports outside the rules, each with its reason. */
const EXCEPTIONS: Record<string, string> = {
  'config.ts -> executor/sandbox/network.ts':
    'the configuration validates SCRIPT_NETWORK_ALLOW with the parser the sandbox uses (a pure function)',
  'config.ts -> services/secret-box.ts':
    'the configuration validates IBKR_TOKEN_KEYS with the keyring parser (a pure function)',
};

/** Packages the domain may use: pure computation, no I/O. */
const DOMAIN_PACKAGES = new Set(['@sinclair/typebox', '@sinclair/typebox/value', 'croner']);

function layerOf(file: string): Layer {
  const [top, ...rest] = file.split('/');
  if (rest.length === 0) {
    if (SHARED.has(top as string)) return 'shared';
    if (ENTRY.has(top as string)) return 'entry';
    throw new Error(
      `${file}: a top-level module that is neither shared nor an entry point; add it to a layer`,
    );
  }
  if (top && top in ALLOWED) return top as Layer;
  throw new Error(`${file}: src/${top}/ is not a layer of docs/architecture.md`);
}

interface Edge {
  from: string;
  to: string;
}

function sources(): string[] {
  return readdirSync(SRC, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => f.split(path.sep).join('/'))
    .sort();
}

function imports(file: string): { local: Edge[]; packages: string[] } {
  const text = readFileSync(path.join(SRC, file), 'utf8');
  const local: Edge[] = [];
  const packages: string[] = [];
  for (const { fileName } of ts.preProcessFile(text, true, true).importedFiles) {
    if (fileName.startsWith('.')) {
      const to = path.posix
        .normalize(path.posix.join(path.posix.dirname(file), fileName))
        .replace(/\.js$/, '.ts');
      local.push({ from: file, to });
    } else packages.push(fileName);
  }
  return { local, packages };
}

const files = sources();

t.test('every source file belongs to a layer', async (t) => {
  for (const file of files) t.doesNotThrow(() => layerOf(file), file);
});

t.test('no layer imports one it must not', async (t) => {
  const broken: string[] = [];
  for (const file of files) {
    for (const { from, to } of imports(file).local) {
      const a = layerOf(from);
      const b = layerOf(to);
      if (a === b || ALLOWED[a].includes(b) || `${from} -> ${to}` in EXCEPTIONS) continue;
      broken.push(`${from} (${a}) -> ${to} (${b})`);
    }
  }
  t.same(broken, [], 'imports against docs/architecture.md');
});

t.test('the domain uses no package with I/O', async (t) => {
  const broken = files
    .filter((f) => layerOf(f) === 'domain')
    .flatMap((f) =>
      imports(f)
        .packages.filter((p) => !DOMAIN_PACKAGES.has(p))
        .map((p) => `${f} -> ${p}`),
    );
  t.same(broken, []);
});

t.test('every exception is still needed', async (t) => {
  const edges = new Set(files.flatMap((f) => imports(f).local.map(({ from, to }) => `${from} -> ${to}`)));
  for (const edge of Object.keys(EXCEPTIONS)) t.ok(edges.has(edge), `${edge} still exists`);
});

t.test('the checker sees a violation (an HTTP route importing a repository)', async (t) => {
  const from = 'http/routes/example.ts';
  const to = 'repositories/user-repository.ts';
  t.notOk(ALLOWED[layerOf(from)].includes(layerOf(to)));
  t.notOk(ALLOWED.repositories.includes('http') || ALLOWED.repositories.includes('services'));
  t.same(ALLOWED.domain, []);
});
