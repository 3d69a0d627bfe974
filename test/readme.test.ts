/** README.md stays true: every setting and every npm script it should name, it names. */
import { readFile } from 'node:fs/promises';
import t from 'tap';
import { ConfigSchema } from '../src/config-schema.ts';

const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8'));

t.test('the configuration table lists every environment variable the app reads', async (t) => {
  for (const name of Object.keys(ConfigSchema.properties)) t.match(readme, `| \`${name}\` |`, name);
});

t.test('README shows the two commands and every package.json script', async (t) => {
  t.match(readme, 'npm install && npm start');
  t.match(readme, 'npm test');
  // Lifecycle hooks (pretest, postinstall) run by npm itself; README's table names them.
  for (const script of Object.keys(pkg.scripts).filter((s) => !/^(pre|post)/.test(s)))
    t.match(readme, new RegExp(`npm (run )?${script}\\b`), script);
  t.match(readme, '`postinstall`', 'the postinstall hook (the driver patch) is named');
});

t.test('README names the docs URL', async (t) => {
  t.match(readme, '/docs');
});
