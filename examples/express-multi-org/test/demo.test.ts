import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { runDemo } from '../src/demo.js';

it('delivers both organisations through their own accounts; B falls over from its dead relay', async () => {
  const lines: string[] = [];
  const demo = await runDemo({ dir: mkdtempSync(join(tmpdir(), 'demo-')), log: (l) => lines.push(l) });
  try {
    const a = demo.receipts['school-a']!;
    const b = demo.receipts['school-b']!;
    expect(a.attempts.map((x) => x.ok)).toEqual([true]);
    expect(b.attempts.map((x) => [x.route, x.ok, x.kind])).toEqual([
      ['school-b-local-relay', false, 'unavailable'],
      [b.route, true, undefined],
    ]);
    expect(demo.upstream.map((m) => [m.account, m.subject]).sort()).toEqual([
      ['office@school-a.example', 'Term report from school-a'],
      ['office@school-b.example', 'Term report from school-b'],
    ]);
    const raw = readFileSync(demo.upstream[1]!.file, 'utf8');
    expect(raw).toContain('report.txt');
    expect(lines.join('\n')).toMatch(/attempt 1: school-b-local-relay\s+failed: unavailable during connect/);
  } finally {
    await demo.close();
  }
});
