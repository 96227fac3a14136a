import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const src = (p: string) => fileURLToPath(new URL(p, import.meta.url));

export default defineConfig({
  resolve: {
    // Tests run against the sources of every workspace package, so a change in core is seen at once.
    alias: [
      { find: /^@mailvia\/core\/testing$/, replacement: src('./packages/core/src/testing/index.ts') },
      { find: /^@mailvia\/core$/, replacement: src('./packages/core/src/index.ts') },
      // A route package's sources, for tests of another package that use it (express's webhook tests).
      { find: /^@mailvia\/(transport-[a-z0-9-]+)$/, replacement: src('./packages/$1/src/index.ts') },
    ],
  },
  test: {
    include: ['packages/*/src/**/*.test.ts', 'packages/*/test/**/*.test.ts', 'examples/*/test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    reporters: ['default'],
  },
});
