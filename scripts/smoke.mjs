// Packs every package, installs the tarballs with plain npm into a fresh folder outside the
// workspace, and imports them (ESM and CJS) under Node 22 and Node 24: what `npm install` gives a user.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const run = (cmd, args, opts = {}) => execFileSync(cmd, args, { stdio: 'pipe', encoding: 'utf8', ...opts });

/** A Node binary of a major version, from the npm registry (the `node` package), cached. */
function nodeBinary(major) {
  const dir = join(homedir(), '.cache', 'mailvia', `node${major}`);
  const bin = join(dir, 'node_modules', '.bin', 'node');
  if (!existsSync(bin)) {
    mkdirSync(dir, { recursive: true });
    run('npm', ['install', '--prefix', dir, '--no-save', '--no-audit', '--no-fund', `node@${major}`], {
      stdio: 'inherit',
    });
  }
  return bin;
}

const work = mkdtempSync(join(tmpdir(), 'mailvia-smoke-'));
const packs = join(work, 'packs');
mkdirSync(packs);
const packages = [];
for (const dir of readdirSync(join(root, 'packages'))) {
  const path = join(root, 'packages', dir);
  const pkg = JSON.parse(readFileSync(join(path, 'package.json'), 'utf8'));
  if (pkg.private) continue;
  run('pnpm', ['pack', '--pack-destination', packs], { cwd: path });
  packages.push(pkg.name);
}
const app = join(work, 'app');
mkdirSync(app);
writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'smoke-app', private: true, version: '1.0.0' }));
const tarballs = readdirSync(packs).map((f) => join(packs, f));
run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', ...tarballs, 'express@5'], {
  cwd: app,
  stdio: 'inherit',
});

const check = (load) => `
const names = ${JSON.stringify(packages)};
(async () => {
  for (const name of names) {
    const mod = ${load};
    const exported = Object.keys(mod).filter((k) => k !== 'default' && k !== '__esModule');
    if (exported.length === 0) throw new Error(name + ' exports nothing');
    console.log('  ' + name + ': ' + exported.length + ' exports');
  }
  const core = ${load.replace(/name/g, "'@mailvia/core'")};
  const mailer = core.createMailer({ mode: 'development' });
  const receipt = await mailer.send({ from: 'smoke@example.org', to: 'user@example.org', subject: 'smoke', text: 'ok' });
  if (receipt.acceptedBy !== 'outbox' || (await mailer.outbox.list()).length !== 1) throw new Error('capture did not work');
  await mailer.close();
  console.log('  a mail captured: ' + receipt.messageId);
})().catch((e) => { console.error(e); process.exit(1); });
`;
writeFileSync(join(app, 'esm.mjs'), check('await import(name)'));
writeFileSync(join(app, 'cjs.cjs'), check('require(name)'));

let failed = 0;
for (const [label, node] of [
  ['Node 22', nodeBinary(22)],
  ['Node 24', join(root, 'node_modules', '.bin', 'node')],
]) {
  const version = run(node, ['--version']).trim();
  for (const file of ['esm.mjs', 'cjs.cjs']) {
    try {
      const out = run(node, [file], { cwd: app });
      console.log(`ok   ${label} (${version}) ${file}\n${out}`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${label} (${version}) ${file}\n${e.stdout ?? ''}${e.stderr ?? ''}`);
    }
  }
}
rmSync(work, { recursive: true, force: true });
console.log(failed ? `smoke: ${failed} failed` : 'smoke: every package installs and imports under Node 22 and 24');
process.exit(failed ? 1 : 0);
