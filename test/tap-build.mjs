// `npm test`'s pretest: tap needs `tap build` once after `npm ci` (it compiles its
// plugin set into node_modules). Skip it when that build is there, so parallel
// test runs do not rebuild it under each other.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

if (!existsSync('node_modules/@tapjs/test/test-built/dist/esm/index.js')) {
  execFileSync('node_modules/.bin/tap', ['build'], { stdio: 'inherit' });
}
