import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

// The shape every route package keeps, and the dependency rules of the design:
// dependencies point to core; core imports no route package; no route imports a sibling.
const root = join(import.meta.dirname, '../../..');
const packagesDir = join(root, 'packages');
const routePackages = readdirSync(packagesDir).filter((d) => d.startsWith('transport-'));

function files(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

describe('workspace shape', () => {
  it('has route packages', () => {
    expect(routePackages.length).toBeGreaterThan(0);
  });

  it('core imports no route package', () => {
    for (const f of files(join(packagesDir, 'core/src'))) {
      expect(readFileSync(f, 'utf8'), f).not.toMatch(/from '@mailvia\/(transport-|express|redis)/);
    }
  });

  for (const dir of routePackages) {
    describe(dir, () => {
      const path = join(packagesDir, dir);
      const pkg = JSON.parse(readFileSync(join(path, 'package.json'), 'utf8'));

      it('is packaged like the others', () => {
        expect(pkg.name).toBe(`@mailvia/${dir}`);
        expect(pkg.type).toBe('module');
        expect(pkg.sideEffects).toBe(false);
        expect(pkg.engines?.node).toBe('>=22');
        expect(pkg.files).toEqual(['dist']);
        expect(pkg.peerDependencies?.['@mailvia/core']).toBe('workspace:^');
        expect(pkg.dependencies?.['@mailvia/core']).toBeUndefined();
        expect(Object.keys(pkg.exports['.'].import)[0]).toBe('types');
      });

      it('has src/index.ts with named exports only, a README with an example, and a changeset', () => {
        const index = readFileSync(join(path, 'src/index.ts'), 'utf8');
        expect(index).not.toMatch(/export default/);
        expect(index).toMatch(/export /);
        const readme = readFileSync(join(path, 'README.md'), 'utf8');
        expect(readme).toMatch(/## Install/);
        expect(readme).toMatch(/```ts/);
        const changesets = readdirSync(join(root, '.changeset'))
          .filter((f) => f.endsWith('.md') && f !== 'README.md')
          .map((f) => readFileSync(join(root, '.changeset', f), 'utf8'));
        expect(changesets.some((c) => c.includes(`"${pkg.name}"`))).toBe(true);
      });

      it("runs core's conformance suite against a real peer", () => {
        const tests = files(join(path, 'test')).map((f) => readFileSync(f, 'utf8'));
        expect(tests.some((t) => t.includes('transportConformance('))).toBe(true);
      });

      it('imports no sibling route package (SOCKS excepted)', () => {
        for (const f of files(join(path, 'src'))) {
          const text = readFileSync(f, 'utf8');
          const siblings = [...text.matchAll(/from '@mailvia\/(transport-[a-z-]+)/g)].map((m) => m[1]);
          expect(
            siblings.filter((s) => s !== 'transport-socks'),
            f,
          ).toEqual([]);
        }
      });
    });
  }
});
