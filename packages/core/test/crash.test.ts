import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { SMTPServer } from 'smtp-server';
import { afterAll, describe, expect, it } from 'vitest';
import { createMailer, sqliteStores } from '../src/index.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const tsx = pathToFileURL(join(root, 'node_modules/tsx/dist/loader.mjs')).href;
const workerScript = fileURLToPath(new URL('./fixtures/queue-worker.ts', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'mailvia-crash-'));
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

/** A lean loopback SMTP sink (no MIME parsing): counts each Message-ID it accepted. */
async function countingSink() {
  const seen = new Map<string, number>();
  let total = 0;
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    disableReverseLookup: true,
    onData(stream, _session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const id = /^Message-ID:\s*(<[^>]+>)/im.exec(Buffer.concat(chunks).toString('latin1'))?.[1] ?? '?';
        seen.set(id, (seen.get(id) ?? 0) + 1);
        total++;
        cb(null, 'Ok: queued');
      });
    },
  });
  server.on('error', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.server.address() as { port: number }).port;
  return {
    port,
    seen,
    get total() {
      return total;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const until = async (check: () => boolean | Promise<boolean>, timeoutMs: number, what: string) => {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

function startWorker(path: string, port: number, concurrency: number): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    ['--import', tsx, workerScript, path, String(port), String(concurrency), '1000'],
    {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  children.push(child);
  let err = '';
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`worker exited (${code}) before it was ready: ${err}`)));
  });
}

describe('embedded store: a worker killed with SIGKILL in the middle of 2,000 mails', () => {
  it('delivers every mail exactly once after a restart, except in-flight ones (at most twice, flagged unknown)', async () => {
    const sink = await countingSink();
    const path = join(dir, 'crash.db');
    const CONCURRENCY = 8;
    const app = createMailer({ ...sqliteStores({ path }), routes: ['capture://'] });
    try {
      // the application enqueues 2,000 mails (durable when each enqueue resolves)
      const ids: { id: string; messageId: string }[] = [];
      for (let batch = 0; batch < 20; batch++) {
        const results = await Promise.all(
          Array.from({ length: 100 }, (_x, i) =>
            app.enqueue({
              from: 'school@example.org',
              to: `parent${batch * 100 + i}@example.org`,
              subject: `report ${batch * 100 + i}`,
              text: 'hello',
            }),
          ),
        );
        ids.push(...results.map((r) => ({ id: r.id, messageId: r.messageId! })));
      }
      expect((await app.queue!.counts()).waiting).toBe(2000);

      const first = await startWorker(path, sink.port, CONCURRENCY);
      await until(() => sink.total >= 600, 60_000, 'the first worker to send 600 mails');
      first.kill('SIGKILL');
      await new Promise((r) => first.once('exit', r));
      const atKill = sink.total;
      expect(atKill).toBeLessThan(2000);

      const second = await startWorker(path, sink.port, CONCURRENCY);
      await until(async () => (await app.queue!.counts()).sent === 2000, 90_000, 'all 2,000 to be sent');
      second.kill('SIGTERM');
      await new Promise((r) => second.once('exit', r));

      // none lost
      for (const { messageId } of ids) expect(sink.seen.get(messageId) ?? 0).toBeGreaterThanOrEqual(1);
      expect(sink.seen.has('?')).toBe(false);
      // exactly once, except the attempts in flight at the kill: at most twice, and flagged unknown
      const unknown = new Set((await app.log!.query({ unknown: true, limit: 5000 })).map((r) => r.id));
      expect(unknown.size).toBeGreaterThan(0);
      expect(unknown.size).toBeLessThanOrEqual(CONCURRENCY);
      for (const { id, messageId } of ids) {
        const n = sink.seen.get(messageId)!;
        expect(n).toBeLessThanOrEqual(unknown.has(id) ? 2 : 1);
      }
      const sent = await app.log!.query({ status: 'sent', limit: 5000 });
      expect(sent).toHaveLength(2000);
      for (const id of unknown) {
        const rec = (await app.log!.get(id))!;
        expect(rec.history.some((a) => a.status === 'unknown' && /worker stopped/.test(a.error ?? ''))).toBe(true);
      }
    } finally {
      await app.close();
      await sink.close();
    }
  }, 180_000);
});

describe('embedded store: an enqueuing process killed with SIGKILL in the middle of many enqueues', () => {
  it('loses no acknowledged enqueue, and leaves no job without its record nor a record without its job', async () => {
    const path = join(dir, 'enqueue-crash.db');
    const script = fileURLToPath(new URL('./fixtures/queue-enqueuer.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', tsx, script, path], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    const acked: string[] = [];
    let buffer = '';
    child.stdout!.on('data', (d: Buffer) => {
      buffer += d.toString();
      const lines = buffer.split('\n');
      buffer = lines.pop() ?? '';
      for (const line of lines) if (line.startsWith('acked ')) acked.push(line.slice(6));
    });
    await until(() => acked.length >= 1000, 60_000, '1,000 acknowledged enqueues');
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;

    const stores = sqliteStores({ path });
    try {
      const jobs = new Set(
        (stores.database.db.prepare('SELECT id FROM mailvia_jobs').all() as { id: string }[]).map((r) => r.id),
      );
      const records = new Set((await stores.log.query({ limit: 1_000_000 })).map((r) => r.id));
      // every acknowledged enqueue is there, whole: its job with its message, and its record
      expect(acked.filter((id) => !jobs.has(id))).toEqual([]);
      for (const id of acked.slice(-20)) {
        expect((await stores.queue.get(id))?.message?.subject).toMatch(/^report \d+$/);
        expect((await stores.log.get(id))?.status).toBe('queued');
      }
      // the ones in flight at the kill are there whole or not at all
      expect([...jobs].filter((id) => !records.has(id))).toEqual([]);
      expect([...records].filter((id) => !jobs.has(id))).toEqual([]);
      expect(jobs.size).toBeGreaterThanOrEqual(acked.length);
    } finally {
      await stores.close();
    }
  }, 90_000);
});
