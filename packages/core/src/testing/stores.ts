import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { prepareMessage } from '../message.js';
import type { RouteStateStore } from '../route-state.js';
import type {
  DeliveryLog,
  DeliveryRecord,
  JobOutcome,
  QueueJob,
  QueueStore,
  SuppressionList,
} from '../stores/types.js';

/** What {@link storeConformance} needs: fresh, empty stores for each test. */
export interface StoreConformanceOptions {
  /** Shown in the test names. */
  name: string;
  /** Fresh stores (their own database, key prefix…); `close` is called after each test. */
  create: () => StoreSet | Promise<StoreSet>;
}

/** The stores under test. */
export interface StoreSet {
  queue: QueueStore;
  log: DeliveryLog;
  suppression: SuppressionList;
  state: RouteStateStore;
  close?(): Promise<void>;
}

const until = async (check: () => boolean | Promise<boolean>, timeoutMs = 10_000) => {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
};

const message = (n: number) =>
  prepareMessage({
    from: 'sender@example.org',
    to: [`rcpt${n}@example.org`, 'Copy@Example.org'],
    subject: `job ${n}`,
    text: 'hello',
    attachments: [{ filename: 'a.bin', content: new Uint8Array([0, 1, 2, 255]) }],
  });

/**
 * The contract every store family must keep (memory, SQLite, Redis): the queue's durability-
 * relevant steps (idempotent add, leases, outcomes, revival), the log's queries and retention,
 * the suppression list, and atomic quota counting.
 */
export function storeConformance(options: StoreConformanceOptions): void {
  const opened: StoreSet[] = [];
  const open = async () => {
    const s = await options.create();
    opened.push(s);
    return s;
  };
  afterAll(async () => {
    for (const s of opened) await s.close?.();
  });

  describe(`${options.name}: store conformance`, () => {
    it('queue: 50 parallel adds with one idempotency key make one job; keys are per organisation', async () => {
      const { queue } = await open();
      const results = await Promise.all(
        Array.from({ length: 50 }, () =>
          queue.add({ id: randomUUID(), organisation: 'org-a', idempotencyKey: 'welcome:1', message: message(1) }),
        ),
      );
      expect(results.filter((r) => r.created)).toHaveLength(1);
      expect(new Set(results.map((r) => r.id)).size).toBe(1);
      const other = await queue.add({
        id: randomUUID(),
        organisation: 'org-b',
        idempotencyKey: 'welcome:1',
        message: message(1),
      });
      expect(other.created).toBe(true);
      expect((await queue.counts()).waiting).toBe(2);
    });

    it('queue: a job comes back intact (attachment bytes too), and outcomes move it', async () => {
      const { queue } = await open();
      const ids = [randomUUID(), randomUUID(), randomUUID()];
      for (const [i, id] of ids.entries()) await queue.add({ id, organisation: 'org', message: message(i) });
      const seen: QueueJob[] = [];
      const outcomes: Record<string, JobOutcome> = {
        [ids[0]!]: { status: 'sent' },
        [ids[1]!]: { status: 'dead', reason: 'refused: 550 5.1.1 no such user' },
        [ids[2]!]: { status: 'retry', runAt: Date.now() + 60_000, attempts: 1, route: 'smtp(a)' },
      };
      const consumer = queue.process(
        async (job) => {
          seen.push(job);
          return outcomes[job.id]!;
        },
        { concurrency: 2, pollInterval: 20 },
      );
      await until(() => seen.length === 3);
      await consumer.stop();
      const first = seen.find((j) => j.id === ids[0])!;
      expect(first.organisation).toBe('org');
      expect(first.message.subject).toBe('job 0');
      const bytes = first.message.attachments[0]!.content;
      const decoded =
        typeof bytes === 'string'
          ? Buffer.from(bytes, first.message.attachments[0]!.encoding === 'base64' ? 'base64' : 'utf8')
          : Buffer.from(bytes!);
      expect([...decoded]).toEqual([0, 1, 2, 255]);
      await until(async () => (await queue.get(ids[2]!))?.state === 'waiting');
      expect((await queue.get(ids[0]!))?.state).toBe('sent');
      expect((await queue.get(ids[0]!))?.message).toBeUndefined();
      const dead = await queue.get(ids[1]!);
      expect(dead?.state).toBe('dead');
      expect(dead?.reason).toContain('550 5.1.1');
      const later = await queue.get(ids[2]!);
      expect(later?.attempts).toBe(1);
      expect(later?.route).toBe('smtp(a)');
      expect(later?.runAt).toBeGreaterThan(Date.now() + 30_000);
      expect(await queue.counts()).toEqual({ waiting: 1, active: 0, sent: 1, dead: 1 });
      // two concurrent revivals: one wins
      const revived = await Promise.all([queue.revive(ids[1]!), queue.revive(ids[1]!)]);
      expect(revived.filter(Boolean)).toHaveLength(1);
      expect(await queue.revive(ids[0]!)).toBe(false);
      const again = await queue.get(ids[1]!);
      expect(again?.state).toBe('waiting');
      expect(again?.attempts).toBe(0);
    });

    it('queue: a job whose consumer stopped answering comes back after its lease, once', async () => {
      const { queue } = await open();
      const id = randomUUID();
      await queue.add({ id, message: message(9) });
      let calls = 0;
      // the first handler never answers (a hung or dead worker); the lease is not renewed once it throws
      const stuck = queue.process(
        async () => {
          calls++;
          throw new Error('worker bug');
        },
        { concurrency: 1, lease: 300, pollInterval: 20 },
      );
      await until(() => calls === 1);
      await stuck.stop();
      const taken: QueueJob[] = [];
      const second = queue.process(
        async (job) => {
          taken.push(job);
          return { status: 'sent' };
        },
        { concurrency: 1, lease: 300, pollInterval: 20 },
      );
      await until(() => taken.length === 1);
      await new Promise((r) => setTimeout(r, 400));
      await second.stop();
      expect(taken.map((j) => j.id)).toEqual([id]);
      expect((await queue.get(id))?.state).toBe('sent');
    });

    it('queue: a held job is not given to a second consumer while its lease is renewed', async () => {
      const { queue } = await open();
      const id = randomUUID();
      await queue.add({ id, message: message(3) });
      const handled: string[] = [];
      let release!: () => void;
      const gate = new Promise<void>((r) => {
        release = r;
      });
      const handler = async (job: QueueJob): Promise<JobOutcome> => {
        handled.push(job.id);
        await gate;
        return { status: 'sent' };
      };
      const a = queue.process(handler, { concurrency: 1, lease: 200, pollInterval: 20 });
      const b = queue.process(handler, { concurrency: 1, lease: 200, pollInterval: 20 });
      await until(() => handled.length === 1);
      await new Promise((r) => setTimeout(r, 700));
      release();
      await a.stop();
      await b.stop();
      expect(handled).toEqual([id]);
    });

    it('log: records, attempts, queries by organisation/status/recipient/time, retention', async () => {
      const { log } = await open();
      const t0 = Date.now() - 10_000;
      const rec = (
        id: string,
        org: string,
        status: DeliveryRecord['status'],
        at: number,
        to: string,
      ): DeliveryRecord => ({
        id,
        organisation: org,
        messageId: `<${id}@example.org>`,
        via: 'queue',
        status,
        from: 'sender@example.org',
        recipients: [to],
        subject: 'hi',
        tags: [],
        attempts: 0,
        unknown: false,
        createdAt: at,
        updatedAt: at,
        content: { text: 'body', attachments: [] },
      });
      await log.put(rec('d1', 'org-a', 'queued', t0, 'ada@example.org'));
      await log.put(rec('d2', 'org-a', 'sent', t0 + 1000, 'bob@example.org'));
      await log.put(rec('d3', 'org-b', 'dead', t0 + 2000, 'ada@example.org'));
      await log.putAttempt({ id: 'a1', deliveryId: 'd1', route: 'smtp(a)', status: 'in-flight', startedAt: t0 + 5 });
      // an attempt in flight marks its delivery sending, in the same step
      expect((await log.get('d1'))?.status).toBe('sending');
      expect((await log.query({ status: 'sending' })).map((r) => r.id)).toEqual(['d1']);
      await log.putAttempt({
        id: 'a2',
        deliveryId: 'd1',
        route: 'smtp(b)',
        status: 'failed',
        kind: 'unavailable',
        startedAt: t0 + 9,
        endedAt: t0 + 10,
      });
      await log.putAttempt({
        id: 'a1',
        deliveryId: 'd1',
        route: 'smtp(a)',
        status: 'unknown',
        startedAt: t0 + 5,
        endedAt: t0 + 8,
      });
      expect(await log.update('d1', { status: 'sending', attempts: 1, updatedAt: t0 + 11 })).toBe(true);
      expect(await log.update('nope', { status: 'sent' })).toBe(false);
      const d1 = await log.get('d1');
      expect(d1?.status).toBe('sending');
      expect(d1?.attempts).toBe(1);
      expect(d1?.history.map((a) => [a.id, a.status])).toEqual([
        ['a1', 'unknown'],
        ['a2', 'failed'],
      ]);
      expect((await log.query({ organisation: 'org-a' })).map((r) => r.id)).toEqual(['d2', 'd1']);
      expect((await log.query({ status: ['dead', 'sent'] })).map((r) => r.id)).toEqual(['d3', 'd2']);
      expect((await log.query({ recipient: 'ADA@example.org' })).map((r) => r.id)).toEqual(['d3', 'd1']);
      expect((await log.query({ since: t0 + 500, until: t0 + 1500 })).map((r) => r.id)).toEqual(['d2']);
      expect((await log.query({ limit: 1, offset: 1 })).map((r) => r.id)).toEqual(['d2']);
      // retention: old finished records go, queued/sending stay; old content is dropped
      const deleted = await log.prune({ recordsBefore: t0 + 1500, contentBefore: t0 + 2500 });
      expect(deleted).toBe(1);
      expect(await log.get('d2')).toBeUndefined();
      expect((await log.get('d1'))?.history).toHaveLength(2);
      expect((await log.get('d3'))?.content).toBeUndefined();
    });

    it('suppression: add, has (any case), list newest first, remove', async () => {
      const { suppression } = await open();
      await suppression.add({
        organisation: 'org-a',
        address: 'Gone@Example.org',
        reason: '550 5.1.1',
        source: 'refused',
        createdAt: 1,
      });
      await suppression.add({
        organisation: 'org-a',
        address: 'left@example.org',
        reason: 'asked',
        source: 'manual',
        createdAt: 2,
      });
      expect((await suppression.has('org-a', 'gone@example.ORG'))?.reason).toBe('550 5.1.1');
      expect(await suppression.has('org-b', 'gone@example.org')).toBeUndefined();
      expect((await suppression.list('org-a')).map((e) => e.address)).toEqual(['left@example.org', 'gone@example.org']);
      expect(await suppression.remove('org-a', 'GONE@example.org')).toBe(true);
      expect(await suppression.remove('org-a', 'gone@example.org')).toBe(false);
      expect(await suppression.has('org-a', 'gone@example.org')).toBeUndefined();
    });

    it('route state: rests, one probe, and quota counts that never exceed the limit under concurrency', async () => {
      const { state } = await open();
      const now = Date.now();
      await state.rest('org:smtp(a)', { until: now - 1, kind: 'unavailable', reason: 'ECONNREFUSED' });
      expect((await state.get('org:smtp(a)'))?.kind).toBe('unavailable');
      const probes = await Promise.all([
        state.claimProbe('org:smtp(a)', now, 10_000),
        state.claimProbe('org:smtp(a)', now, 10_000),
      ]);
      expect(probes.filter(Boolean)).toHaveLength(1);
      await state.clear('org:smtp(a)');
      expect(await state.get('org:smtp(a)')).toBeUndefined();

      const day = { type: 'fixed', ms: 86_400_000 } as const;
      const results = await Promise.all(Array.from({ length: 30 }, () => state.consume('quota:org:smtp(a)', day, 10)));
      expect(results.filter((r) => r.allowed)).toHaveLength(10);
      const peek = await state.consume('quota:org:smtp(a)', day, 10, { amount: 0 });
      expect(peek.used).toBe(10);
      expect(peek.resetAt % 86_400_000).toBe(0);
      // the next fixed window starts from zero
      expect((await state.consume('quota:org:smtp(a)', day, 10, { now: peek.resetAt })).allowed).toBe(true);

      const rolling = { type: 'rolling', ms: 1000 } as const;
      const t = Date.now();
      const r1 = await Promise.all(
        Array.from({ length: 8 }, () => state.consume('quota:org:smtp(b)', rolling, 5, { now: t })),
      );
      expect(r1.filter((r) => r.allowed)).toHaveLength(5);
      const denied = r1.find((r) => !r.allowed)!;
      expect(denied.resetAt).toBe(t + 1000);
      expect((await state.consume('quota:org:smtp(b)', rolling, 5, { now: t + 999 })).allowed).toBe(false);
      expect((await state.consume('quota:org:smtp(b)', rolling, 5, { now: t + 1001 })).allowed).toBe(true);
    });
  });
}
