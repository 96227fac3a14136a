import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { type Dante, startDante } from './peers/dante.js';

let dante: Dante;
beforeAll(async () => {
  dante = await startDante();
});
afterAll(() => dante?.stop());

it("the README's runnable example sends through Dante", async () => {
  const readme = readFileSync(fileURLToPath(new URL('../README.md', import.meta.url)), 'utf8');
  const block = /Then run this file[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(block, 'the runnable example is in the README').toBeDefined();
  const dir = fileURLToPath(new URL('../.tmp/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  const file = `${dir}readme-example-${process.pid}.ts`;
  writeFileSync(
    file,
    block!
      .replace("'@mailvia/transport-socks'", `'${fileURLToPath(new URL('../src/index.ts', import.meta.url))}'`)
      .replace('socks5h://127.0.0.1:1080', `socks5h://127.0.0.1:${dante.port}`),
  );
  const log = vi.spyOn(console, 'log').mockImplementation(() => {});
  try {
    await import(file);
    const lines = log.mock.calls.map((c) => c.join(' '));
    expect(lines[0]).toMatch(
      new RegExp(
        `^smtp://office@school-a\\.example@127\\.0\\.0\\.1:\\d+\\?proxy=socks5h://127\\.0\\.0\\.1:${dante.port} 250 `,
      ),
    );
    expect(lines[1]).toBe('Through the proxy over TLS: true');
    await dante.waitForLog(/tcp\/connect \[/);
  } finally {
    log.mockRestore();
    rmSync(file, { force: true });
  }
});
