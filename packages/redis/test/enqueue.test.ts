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
});
