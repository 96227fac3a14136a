// A worker process on the Redis stores killed with SIGKILL while sends are in flight: a second
// worker process takes its jobs after BullMQ's stalled check; nothing is lost, nothing that was
// not in flight is sent twice, and what was in flight is sent at most once more, flagged unknown.
import { createMailer, type RouteSpec } from '@mailvia/core';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killChildren, mail, startWorker, until } from './children.js';
import { freshStores, REDIS_URL, requireRedis } from './helpers.js';

beforeAll(() => requireRedis());
afterAll(() => killChildren());

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
      killChildren();
      await app.close();
      await stores.close();
      await sink.close();
    }
  }, 30_000);
});
