// Type-checks every ```ts block of the READMEs and docs against the built packages, so the docs
// cannot drift from the types. A block that is deliberately partial starts with `// not checked`.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
// Free names snippets may use without defining them (the application's own objects, or a name
// an earlier block of the same document defined). Globals: a snippet's own declarations shadow them.
const PRELUDE = `declare const db: { organisation(id: string): Promise<{ mailRoutes: import('@mailvia/core').RouteSpec }> };
declare const peer: { url: string; received: { subject: string }[] };
declare const app: { use(...handlers: unknown[]): unknown };
declare const mailer: import('@mailvia/core').Mailer;
declare function acme(options: { apiKey: string; baseUrl?: string }): import('@mailvia/core').Transport;
`;

const docs = [
  ['README.md', 'examples/express-multi-org'],
  ...readdirSync(join(root, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => [`docs/${f}`, 'examples/express-multi-org']),
  ...readdirSync(join(root, 'packages'))
    .filter((d) => existsSync(join(root, 'packages', d, 'README.md')))
    .map((d) => [`packages/${d}/README.md`, `packages/${d}`]),
];

const byHost = new Map();
for (const [doc, host] of docs) {
  const text = readFileSync(join(root, doc), 'utf8');
  const blocks = [...text.matchAll(/```ts\n([\s\S]*?)```/g)]
    .map((m) => m[1])
    .filter((b) => !b.startsWith('// not checked'));
  if (!byHost.has(host)) byHost.set(host, []);
  blocks.forEach((b, i) => {
    byHost.get(host).push({ name: `${doc.replace(/[/.]/g, '_')}_${i + 1}.ts`, doc, code: b });
  });
}

let failed = 0;
let checked = 0;
for (const [host, snippets] of byHost) {
  if (snippets.length === 0) continue;
  const dir = join(root, host, '.snippets');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'prelude.d.ts'), PRELUDE);
  for (const s of snippets) writeFileSync(join(dir, s.name), `${s.code}\nexport {};\n`);
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      extends: '../../../tsconfig.base.json',
      compilerOptions: { noEmit: true, noUnusedLocals: false, types: ['node'] },
      include: ['*.ts'],
    }),
  );
  try {
    execFileSync(join(root, 'node_modules/.bin/tsc'), ['-p', join(dir, 'tsconfig.json')], {
      cwd: join(root, host),
      stdio: 'pipe',
    });
    checked += snippets.length;
    console.log(`ok   ${snippets.length} snippet(s) of ${[...new Set(snippets.map((s) => s.doc))].join(', ')}`);
  } catch (e) {
    failed++;
    console.log(
      `FAIL snippets checked in ${relative(root, dir)}:\n${e.stdout?.toString() ?? ''}${e.stderr?.toString() ?? ''}`,
    );
  }
  if (!failed) rmSync(dir, { recursive: true, force: true });
}
console.log(failed ? `snippets: ${failed} group(s) failed` : `snippets: ${checked} type-checked`);
process.exit(failed ? 1 : 0);
