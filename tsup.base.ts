import type { Options } from 'tsup';

/** The one tsup configuration every package builds with: ESM + CJS + .d.ts/.d.cts. */
export function packageBuild(entry: Record<string, string>, overrides: Partial<Options> = {}): Options {
  return {
    entry,
    format: ['esm', 'cjs'],
    dts: true,
    sourcemap: true,
    clean: true,
    target: 'node22',
    platform: 'node',
    splitting: false,
    treeshake: true,
    shims: false,
    ...overrides,
  };
}
