import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { memoryStores, sqliteStores } from '../src/index.js';
import { storeConformance } from '../src/testing/index.js';

const dir = mkdtempSync(join(tmpdir(), 'mailvia-stores-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

storeConformance({ name: 'memory', create: () => memoryStores() });
storeConformance({ name: 'sqlite', create: () => sqliteStores({ path: join(dir, `t${n++}.db`) }) });
