import type { DeliveryRecord } from '@mailvia/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshStores, requireRedis } from './helpers.js';

beforeAll(() => requireRedis());

const stores = freshStores();
afterAll(() => stores.close());

const record = (id: string, at: number): DeliveryRecord => ({
  id,
  organisation: 'school',
  messageId: `<${id}@example.org>`,
  via: 'queue',
  status: 'queued',
  from: 'school@example.org',
  recipients: ['parent@example.org'],
  subject: 'report',
  tags: [],
  attempts: 0,
  unknown: false,
  createdAt: at,
  updatedAt: at,
});

describe('the Redis log: an outcome that reaches it late', () => {
  it('leaves the record to the worker that concluded the attempt meanwhile, and records the attempt as it ended', async () => {
    const { log } = stores;
    const t0 = Date.now() - 10_000;
    const a1 = { id: 'a1', deliveryId: 'late-1', route: 'relay', startedAt: t0 + 1 } as const;
    await log.putAttempt({ ...a1, status: 'in-flight' }, record('late-1', t0));
    // Redis was away when the first worker's outcome was due; the job came back to a second worker,
    // which found the attempt in flight, called it unknown and sent again
    await log.putAttempt({ ...a1, status: 'unknown', endedAt: t0 + 5000, error: 'the worker stopped' });
    const a2 = { id: 'a2', deliveryId: 'late-1', route: 'relay', startedAt: t0 + 5001 } as const;
    await log.putAttempt({ ...a2, status: 'in-flight' });
    expect(
      await log.finish('late-1', [{ ...a2, status: 'ok', endedAt: t0 + 5002 }], {
        status: 'sent',
        attempts: 2,
        unknown: true,
        sentAt: t0 + 5002,
        updatedAt: t0 + 5002,
      }),
    ).toBe(true);
    // then the first worker's outcome arrives
    expect(
      await log.finish('late-1', [{ ...a1, status: 'ok', endedAt: t0 + 2, response: '250 ok' }], {
        status: 'sent',
        attempts: 1,
        unknown: false,
        sentAt: t0 + 2,
        updatedAt: t0 + 2,
      }),
    ).toBe(true);
    const r = (await log.get('late-1'))!;
    expect(r).toMatchObject({ status: 'sent', attempts: 2, unknown: true, sentAt: t0 + 5002 });
    expect(r.history.map((a) => [a.id, a.status])).toEqual([
      ['a1', 'ok'],
      ['a2', 'ok'],
    ]);
    expect((await log.query({ unknown: true })).map((x) => x.id)).toEqual(['late-1']);
  });

  it('applies an outcome whose attempt is still in flight, once: a second copy of it changes nothing', async () => {
    const { log } = stores;
    const t0 = Date.now() - 5_000;
    const a = { id: 'b1', deliveryId: 'on-time', route: 'relay', startedAt: t0 + 1 } as const;
    await log.putAttempt({ ...a, status: 'in-flight' }, record('on-time', t0));
    const outcome = [{ ...a, status: 'ok' as const, endedAt: t0 + 2 }];
    expect(await log.finish('on-time', outcome, { status: 'sent', attempts: 1, updatedAt: t0 + 2 })).toBe(true);
    expect(await log.update('on-time', { reason: 'checked by hand', updatedAt: t0 + 3 })).toBe(true);
    expect(await log.finish('on-time', outcome, { status: 'sent', attempts: 1, updatedAt: t0 + 2 })).toBe(true);
    expect(await log.get('on-time')).toMatchObject({
      status: 'sent',
      attempts: 1,
      reason: 'checked by hand',
      updatedAt: t0 + 3,
    });
  });
});
