// A worker process on the Redis stores killed with SIGKILL while sends are in flight: a second
// worker process takes its jobs after BullMQ's stalled check; nothing is lost, nothing that was
// not in flight is sent twice, and what was in flight is sent at most once more, flagged unknown.
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createMailer, type RouteSpec } from '@mailvia/core';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshStores, REDIS_URL, requireRedis } from './helpers.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const tsx = pathToFileURL(join(root, 'node_modules/tsx/dist/loader.mjs')).href;
const alias = new URL('./fixtures/alias.mjs', import.meta.url).href;
const workerScript = fileURLToPath(new URL('./fixtures/worker.ts', import.meta.url));

const children: ChildProcess[] = [];
beforeAll(() => requireRedis());
afterAll(() => {
  // only the processes this file started, by their PID
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

/**
 * A loopback SMTP sink (no TLS, no MIME parsing) that counts each Message-ID whose body it
 * received whole. The first time it receives a mail whose subject starts with `hold`, it never
 * answers the DATA: the sender's attempt stays in flight (the sink has the mail; the sender does
 * not know), as with a provider that took the mail just before the sender died.
 */
async function holdingSink() {
  const seen = new Map<string, number>();
  const held = new Set<string>();
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
        const raw = Buffer.concat(chunks).toString('latin1');
        const id = /^Message-ID:\s*(<[^>]+>)/im.exec(raw)?.[1] ?? '?';
        const subject = /^Subject:\s*(.*)$/im.exec(raw)?.[1]?.trim() ?? '';
        const n = (seen.get(id) ?? 0) + 1;
        seen.set(id, n);
        total++;
        if (subject.startsWith('hold') && n === 1) {
          held.add(id);
          return; // no answer: the connection stays open until the sender goes away
        }
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
    held,
    get total() {
      return total;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A worker process (packages/redis/test/fixtures/worker.ts); `sent` lists the Message-IDs it sent. */
function startWorker(config: Record<string, unknown>): Promise<{ child: ChildProcess; sent: string[] }> {
  const child = spawn(process.execPath, ['--import', tsx, '--import', alias, workerScript], {
    cwd: root,
    env: { ...process.env, MAILVIA_WORKER: JSON.stringify(config) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const sent: string[] = [];
  let err = '';
  let buffer = '';
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      buffer += d.toString();
      const lines = buffer.split('\n');
      buffer = lines.pop() ?? '';
      for (const line of lines) {
        if (line === 'ready') resolve({ child, sent });
        else if (line.startsWith('sent ')) sent.push(line.slice(5));
      }
    });
    child.once('exit', (code) => reject(new Error(`worker exited (${code}) before it was ready: ${err}`)));
  });
}

const until = async (check: () => boolean | Promise<boolean>, timeoutMs: number, what: string) => {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
};

const mail = (subject: string) => ({ from: 'school@example.org', to: 'parent@example.org', subject, text: subject });

describe('Redis stores: a worker process killed with SIGKILL while sends are in flight', () => {
  it('a second worker process delivers every mail: in-flight ones at most once more, flagged unknown; the others exactly once', async () => {
    const sink = await holdingSink();
    const stores = freshStores();
    const route: RouteSpec = { type: 'smtp', name: 'relay', host: '127.0.0.1', port: sink.port, maxConnections: 4 };
    const app = createMailer({ ...stores, organisations: () => [route] });
    const CONCURRENCY = 4;
    const config = {
      redis: REDIS_URL,
      prefix: stores.prefix,
      routes: { school: [route] },
      concurrency: CONCURRENCY,
      // BullMQ's lock and stalled check: a dead worker's jobs come back about 1-2 s after it died
      lease: 1000,
    };
    try {
      // 20 mails, 3 whose DATA answer never comes, 20 more: the fourth slot keeps sending meanwhile
      const enqueue = (subject: string) => app.enqueue(mail(subject), { organisation: 'school' });
      const all: { id: string; messageId: string; hold: boolean }[] = [];
      for (const [subject, hold] of [
        ...Array.from({ length: 20 }, (_x, i) => [`report ${i}`, false] as const),
        ...Array.from({ length: 3 }, (_x, i) => [`hold ${i}`, true] as const),
        ...Array.from({ length: 20 }, (_x, i) => [`notice ${i}`, false] as const),
      ]) {
        const r = await enqueue(subject);
        all.push({ id: r.id, messageId: r.messageId!, hold });
      }
      const heldMails = all.filter((m) => m.hold);

      const first = await startWorker(config);
      await until(() => sink.held.size === 3 && sink.seen.size >= 30, 20_000, 'the three held mails and 30 mails');
      // the held attempts are in flight in the log when the worker dies
      for (const m of heldMails) {
        const rec = (await stores.log.get(m.id))!;
        expect(rec.status).toBe('sending');
        expect(rec.history.map((a) => [a.route, a.status])).toEqual([['relay', 'in-flight']]);
      }
      const exited = new Promise((r) => first.child.once('exit', r));
      first.child.kill('SIGKILL');
      await exited;
      const atKill = new Map(sink.seen);
      expect(atKill.size).toBeLessThan(all.length);
      for (const m of heldMails) expect(first.sent).not.toContain(m.messageId);

      const second = await startWorker(config);
      await until(
        async () => (await Promise.all(all.map((m) => stores.log.get(m.id)))).every((r) => r?.status === 'sent'),
        20_000,
        'every mail to be sent',
      );
      expect((await stores.queue.counts()).sent).toBe(all.length);
      // nothing more arrives later
      await new Promise((r) => setTimeout(r, 500));
      const exitedToo = new Promise((r) => second.child.once('exit', r));
      second.child.kill('SIGTERM');
      await exitedToo;

      // none lost
      expect(sink.seen.has('?')).toBe(false);
      for (const m of all) expect(sink.seen.get(m.messageId) ?? 0).toBeGreaterThanOrEqual(1);
      const unknown = new Set((await stores.log.query({ unknown: true, limit: 1000 })).map((r) => r.id));
      // in flight at the kill: the three held ones, and at most one more (the fourth slot)
      for (const m of heldMails) expect(unknown.has(m.id)).toBe(true);
      expect(unknown.size).toBeLessThanOrEqual(CONCURRENCY);
      for (const m of all) {
        const n = sink.seen.get(m.messageId)!;
        const rec = (await stores.log.get(m.id))!;
        expect(rec.status).toBe('sent');
        expect(rec.route).toBe('relay');
        if (unknown.has(m.id)) {
          // once more at most (by the second worker), with the same Message-ID; flagged unknown
          expect(n).toBeLessThanOrEqual((atKill.get(m.messageId) ?? 0) + 1);
          expect(n).toBeLessThanOrEqual(2);
          expect(rec.unknown).toBe(true);
          expect(rec.history.some((a) => a.status === 'unknown' && /worker stopped/.test(a.error ?? ''))).toBe(true);
          expect(rec.history.at(-1)).toMatchObject({ status: 'ok', route: 'relay' });
        } else {
          expect(n).toBe(1);
          expect(rec.unknown).toBe(false);
          expect(rec.history.map((a) => a.status)).toEqual(['ok']);
        }
      }
      // the held ones: the sink had them once (no answer), the second worker sent them once more
      for (const m of heldMails) {
        expect(sink.seen.get(m.messageId)).toBe(2);
        expect(second.sent).toContain(m.messageId);
        const rec = (await stores.log.get(m.id))!;
        expect(rec.history.map((a) => [a.route, a.status])).toEqual([
          ['relay', 'unknown'],
          ['relay', 'ok'],
        ]);
        expect(rec.attempts).toBe(2);
      }
      expect(sink.total).toBe([...sink.seen.values()].reduce((x, y) => x + y, 0));
    } finally {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      await app.close();
      await stores.close();
      await sink.close();
    }
  }, 30_000);
});
