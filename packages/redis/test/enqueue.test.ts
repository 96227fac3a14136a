import { createMailer } from '@mailvia/core';
import { startSmtpSink } from '@mailvia/core/testing';
import { beforeAll, describe, expect, it } from 'vitest';
import { freshStores, requireRedis } from './helpers.js';

beforeAll(() => requireRedis());

describe('enqueue on Redis', () => {
  it('50 parallel enqueues with one idempotency key send one mail; a dead one is resent once', async () => {
    let refuse = true;
    const sink = await startSmtpSink({
      starttls: false,
      behaviour: (stage, d) =>
        stage === 'data' && refuse && d.mail?.parsed.subject === 'blocked'
          ? { code: 554, message: '5.6.0 Message content refused' }
          : undefined,
    });
    const stores = freshStores();
    const mailer = createMailer({
      ...stores,
      organisations: () => [{ type: 'smtp', host: '127.0.0.1', port: sink.port, name: 'relay' }],
    });
    try {
      const results = await Promise.all(
        Array.from({ length: 50 }, (_x, i) =>
          mailer.enqueue(
            { from: 'school@example.org', to: 'parent@example.org', subject: `invoice ${i}`, text: 'hi' },
            { organisation: 'school', idempotencyKey: 'invoice:77' },
          ),
        ),
      );
      expect(results.filter((r) => !r.duplicate)).toHaveLength(1);
      expect(new Set(results.map((r) => r.id)).size).toBe(1);
      // the same key in another organisation is another mail
      const other = await mailer.enqueue(
        { from: 'school@example.org', to: 'parent@example.org', subject: 'other org', text: 'hi' },
        { organisation: 'college', idempotencyKey: 'invoice:77' },
      );
      expect(other.duplicate).toBe(false);
      const dead: string[] = [];
      mailer.on('dead', (e) => dead.push(e.id));
      const blocked = await mailer.enqueue(
        { from: 'school@example.org', to: 'parent@example.org', subject: 'blocked', text: 'hi' },
        { organisation: 'school' },
      );
      mailer.startWorker({ concurrency: 8 });
      await sink.waitFor(2);
      const deadline = Date.now() + 10_000;
      while (!dead.includes(blocked.id) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect((await mailer.log!.get(blocked.id))?.status).toBe('dead');
      refuse = false;
      const again = await Promise.all([mailer.resend(blocked.id), mailer.resend(blocked.id)]);
      expect(again.filter((r) => !r.duplicate)).toHaveLength(1);
      await sink.waitFor(3);
      await new Promise((r) => setTimeout(r, 500));
      const subjects = sink.received.map((m) => m.parsed.subject ?? '');
      expect(subjects.filter((x) => x === 'blocked' || x === 'other org').sort()).toEqual(['blocked', 'other org']);
      expect(sink.received.filter((m) => m.parsed.subject?.startsWith('invoice'))).toHaveLength(1);
      expect(await stores.queue.counts()).toMatchObject({ sent: 3, dead: 0, waiting: 0 });
    } finally {
      await mailer.close();
      await stores.close();
      await sink.close();
    }
  });

  it('an enqueue writes its job alone: the record rides in it until a worker takes the job, then the log holds it', async () => {
    const sink = await startSmtpSink({ starttls: false });
    const stores = freshStores();
    const mailer = createMailer({
      ...stores,
      organisations: () => [{ type: 'smtp', host: '127.0.0.1', port: sink.port, name: 'relay' }],
    });
    const recordKey = (id: string) => `${stores.prefix}:log:d:${id}`;
    try {
      const before = await stores.redis.dbsize();
      const queued = await Promise.all(
        [1, 2, 3].map((i) =>
          mailer.enqueue(
            { from: 'school@example.org', to: `parent${i}@example.org`, subject: `report ${i}`, text: 'hi' },
            { organisation: 'school', ...(i === 3 ? { idempotencyKey: 'report:3' } : {}) },
          ),
        ),
      );
      for (const q of queued) expect(await stores.redis.exists(recordKey(q.id))).toBe(0);
      // nothing of the log's: no record, no index
      expect(await stores.redis.keys(`${stores.prefix}:log:*`)).toEqual([]);
      expect(await stores.redis.dbsize()).toBeGreaterThan(before);
      expect((await stores.log.query({ organisation: 'school', status: 'queued' })).map((r) => r.id).sort()).toEqual(
        queued.map((q) => q.id).sort(),
      );
      mailer.startWorker({ concurrency: 4 });
      await sink.waitFor(3);
      const deadline = Date.now() + 10_000;
      const sent = async () =>
        (await Promise.all(queued.map((q) => stores.log.get(q.id)))).every((r) => r?.status === 'sent');
      while (!(await sent()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      for (const q of queued) expect(await stores.redis.exists(recordKey(q.id))).toBe(1);
      const records = await stores.log.query({ organisation: 'school' });
      expect(records.map((r) => [r.status, r.subject]).sort()).toEqual([
        ['sent', 'report 1'],
        ['sent', 'report 2'],
        ['sent', 'report 3'],
      ]);
      expect(sink.received.flatMap((m) => m.to).sort()).toEqual([
        'parent1@example.org',
        'parent2@example.org',
        'parent3@example.org',
      ]);
    } finally {
      await mailer.close();
      await stores.close();
      await sink.close();
    }
  });
});
