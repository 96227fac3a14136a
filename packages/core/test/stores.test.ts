import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, describe, expect, it } from 'vitest';
import { memoryStores, sqliteStores } from '../src/index.js';
import { storeConformance } from '../src/testing/index.js';

const dir = mkdtempSync(join(tmpdir(), 'mailvia-stores-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

storeConformance({ name: 'memory', create: () => memoryStores() });
storeConformance({ name: 'sqlite', create: () => sqliteStores({ path: join(dir, `t${n++}.db`) }) });

describe('the embedded store (SQLite)', () => {
  it('keeps its database in WAL mode, syncing every commit (synchronous=FULL) unless told normal', async () => {
    const full = sqliteStores({ path: join(dir, 'wal-full.db') });
    const normal = sqliteStores({ path: join(dir, 'wal-normal.db'), synchronous: 'normal' });
    try {
      expect(full.database.db.prepare('PRAGMA synchronous').get()).toEqual({ synchronous: 2 });
      expect(normal.database.db.prepare('PRAGMA synchronous').get()).toEqual({ synchronous: 1 });
      // WAL is the file's mode: another connection finds it so
      const other = new DatabaseSync(join(dir, 'wal-full.db'));
      try {
        expect(other.prepare('PRAGMA journal_mode').get()).toEqual({ journal_mode: 'wal' });
      } finally {
        other.close();
      }
      // a bad setting is refused before any file is made
      expect(() => sqliteStores({ path: join(dir, 'bad.db'), synchronous: 'off' as never })).toThrow(/synchronous/);
      expect(existsSync(join(dir, 'bad.db'))).toBe(false);
    } finally {
      await full.close();
      await normal.close();
    }
  });
});
