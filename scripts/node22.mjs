// Runs core's test suite under Node 22 (packages publish with engines.node >=22).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

const dir = join(homedir(), '.cache', 'mailvia', 'node22');
const node = join(dir, 'node_modules', '.bin', 'node');
if (!existsSync(node)) {
  mkdirSync(dir, { recursive: true });
  execFileSync('npm', ['install', '--prefix', dir, '--no-save', '--no-audit', '--no-fund', 'node@22'], {
    stdio: 'inherit',
  });
}
const root = new URL('..', import.meta.url).pathname;
console.log(`core tests on ${execFileSync(node, ['--version'], { encoding: 'utf8' }).trim()}`);
const r = spawnSync(node, [join(root, 'node_modules/vitest/vitest.mjs'), 'run', 'packages/core'], {
  stdio: 'inherit',
  cwd: root,
});
process.exit(r.status ?? 1);
