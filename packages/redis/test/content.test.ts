import { createMailer } from '@mailvia/core';
import { startSmtpSink } from '@mailvia/core/testing';
import { Redis } from 'ioredis';
import { beforeAll, describe, expect, it } from 'vitest';
import { freshStores, REDIS_URL, requireRedis } from './helpers.js';

beforeAll(() => requireRedis());

/** Every string Redis holds under a prefix: values, hash fields and values, members, stream entries. */
async function everything(prefix: string): Promise<string[]> {
  const r = new Redis(REDIS_URL);
  const out: string[] = [];
  try {
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 500);
      cursor = next;
      for (const key of keys) {
        const type = await r.type(key);
        if (type === 'string') out.push((await r.get(key)) ?? '');
        else if (type === 'hash') out.push(...Object.entries(await r.hgetall(key)).flat());
        else if (type === 'list') out.push(...(await r.lrange(key, '0', '-1')));
        else if (type === 'set') out.push(...(await r.smembers(key)));
        else if (type === 'zset') out.push(...(await r.zrange(key, '0', '-1')));
        else if (type === 'stream') for (const [, fields] of await r.xrange(key, '-', '+')) out.push(...fields);
      }
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
  return out;
}

describe('a sent message on Redis', () => {
  it('leaves no copy of its content in Redis once sent (the queue drops it; the log keeps none by default)', async () => {
    const secret = 'reset-token-7f3a9c41e2';
    const sink = await startSmtpSink({ starttls: false });
    const stores = freshStores();
    const mailer = createMailer({
      ...stores,
      organisations: () => [{ type: 'smtp', host: '127.0.0.1', port: sink.port, name: 'relay' }],
    });
    const account = (to: string) => ({
      from: 'school@example.org',
      to,
      subject: 'Your account',
      text: `Choose a password: https://school.example.org/reset?token=${secret}`,
      html: `<p><a href="https://school.example.org/reset?token=${secret}">Choose a password</a></p>`,
    });
    try {
      const plain = await mailer.enqueue(account('parent@example.org'), { organisation: 'school' });
      const keyed = await mailer.enqueue(account('teacher@example.org'), {
        organisation: 'school',
        idempotencyKey: 'welcome:teacher',
      });
      // queued mail is kept whole until a worker sends it
      expect((await everything(stores.prefix)).some((v) => v.includes(secret))).toBe(true);
      const worker = mailer.startWorker({ concurrency: 2 });
      await sink.waitFor(2);
      expect(sink.received.map((m) => m.parsed.text ?? '').every((t) => t.includes(secret))).toBe(true);
      await worker.stop();
      expect((await stores.log.get(plain.id))?.status).toBe('sent');
      expect((await stores.log.get(keyed.id))?.status).toBe('sent');
      const left = (await everything(stores.prefix)).filter((v) => v.includes(secret));
      expect(left).toEqual([]);
      // the sent job is still there for its key: the same key is still a duplicate, and sends nothing
      const again = await mailer.enqueue(account('teacher@example.org'), {
        organisation: 'school',
        idempotencyKey: 'welcome:teacher',
      });
      expect(again).toMatchObject({ id: keyed.id, duplicate: true });
      expect(await stores.queue.get(keyed.id)).toMatchObject({ state: 'sent', idempotencyKey: 'welcome:teacher' });
      expect(sink.received).toHaveLength(2);
    } finally {
      await mailer.close();
      await stores.close();
      await sink.close();
    }
  });
});
