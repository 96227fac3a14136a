// publint and @arethetypeswrong/cli on every package, as a user's bundler and Node would see it.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const bin = (name) => join(root, 'node_modules/.bin', name);
let failed = 0;
for (const dir of readdirSync(join(root, 'packages'))) {
  const path = join(root, 'packages', dir);
  const pkg = JSON.parse(readFileSync(join(path, 'package.json'), 'utf8'));
  if (pkg.private) continue;
  for (const [tool, args] of [
    ['publint', ['--strict', path]],
    // node10 cannot resolve subpath exports at all; every other resolution must work
    ['attw', ['--pack', path, '--profile', 'node16', '--format', 'table-flipped']],
  ]) {
    try {
      execFileSync(bin(tool), args, { stdio: 'pipe', cwd: path });
      console.log(`ok   ${tool} ${pkg.name}`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${tool} ${pkg.name}\n${e.stdout?.toString() ?? ''}${e.stderr?.toString() ?? ''}`);
    }
  }
}
console.log(failed ? `${failed} packaging checks failed` : 'all packaging checks passed');
process.exit(failed ? 1 : 0);
