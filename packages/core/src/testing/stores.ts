import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { capture, createOutbox } from '../capture.js';
import { createMailer, type Mailer } from '../mailer.js';
import { prepareMessage } from '../message.js';
import { readQuota, withQuota } from '../quota.js';
import type { RouteStateStore } from '../route-state.js';
import type {
  DeliveryLog,
  DeliveryRecord,
  JobOutcome,
  QueueJob,
  QueueStore,
  SuppressionList,
} from '../stores/types.js';
import { MAX_DELIVERY_EVENTS } from '../stores/types.js';
import { type SmtpSink, startSmtpSink } from './peers.js';

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

/** A mailer on the stores under test (with their log, or `log`) whose one route is the sink. */
const sinkMailer = (stores: StoreSet, sink: SmtpSink, log: DeliveryLog = stores.log): Mailer =>
  createMailer({
    queue: stores.queue,
    log,
    state: stores.state,
    suppression: stores.suppression,
    organisations: () => [{ type: 'smtp', name: 'sink', host: '127.0.0.1', port: sink.port, tls: { ca: sink.ca } }],
  });

/** The ids a query of the log finds, in order. */
const idsOf = async (log: DeliveryLog, q: Parameters<DeliveryLog['query']>[0]) => (await log.query(q)).map((r) => r.id);

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

    it('queue: a revived job starts afresh: attempts reset, no route pinned, same message', async () => {
      const { queue } = await open();
      const id = randomUUID();
      await queue.add({ id, organisation: 'org', message: message(4) });
      let takes = 0;
      const consumer = queue.process(
        async (): Promise<JobOutcome> =>
          ++takes === 1
            ? { status: 'retry', runAt: Date.now(), attempts: 1, route: 'smtp(a)' }
            : { status: 'dead', reason: 'the outcome on smtp(a) is unknown; not retried (policy)' },
        { concurrency: 1, pollInterval: 20 },
      );
      await until(async () => (await queue.get(id))?.state === 'dead');
      await consumer.stop();
      expect((await queue.get(id))?.route).toBe('smtp(a)');
      expect(await queue.revive(id)).toBe(true);
      const revived = await queue.get(id);
      expect(revived).toMatchObject({ state: 'waiting', attempts: 0, organisation: 'org' });
      expect(revived?.route).toBeUndefined();
      expect(revived?.message?.subject).toBe('job 4');
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
      // a patch removes fields: one written with the record, one set by an earlier patch
      await log.put({
        ...rec('d4', 'org-c', 'failed', t0 + 3000, 'cy@example.org'),
        reason: 'refused',
        code: '550 5.1.1',
      });
      expect(await log.update('d4', { kind: 'refused', nextAttemptAt: t0 + 9000 })).toBe(true);
      expect(
        await log.update('d4', { status: 'sent', reason: undefined, code: undefined, nextAttemptAt: undefined }),
      ).toBe(true);
      const d4 = await log.get('d4');
      expect(d4).toMatchObject({ status: 'sent', kind: 'refused', subject: 'hi' });
      expect(d4 && ['reason', 'code', 'nextAttemptAt'].filter((k) => k in d4)).toEqual([]);
      expect((await log.query({ status: 'failed' })).map((r) => r.id)).not.toContain('d4');
      // a record replaced in the same turn is in the indexes of its last version only
      await Promise.all([
        log.put(rec('d7', 'org-c', 'queued', t0 + 3300, 'eve@example.org')),
        log.put(rec('d7', 'org-c', 'sent', t0 + 3300, 'eve@example.org')),
      ]);
      expect((await log.query({ status: 'queued' })).map((r) => r.id)).not.toContain('d7');
      expect((await log.query({ status: 'sent' })).map((r) => r.id)).toContain('d7');
      expect((await log.query({ recipient: 'eve@example.org' })).map((r) => r.id)).toEqual(['d7']);
      if (log.finish) {
        // a send's outcome in one step: ending attempts and the record's changes
        await log.put(rec('d5', 'org-c', 'queued', t0 + 3100, 'dee@example.org'));
        const a5 = { id: 'a5', deliveryId: 'd5', route: 'smtp(a)', startedAt: t0 + 3101 } as const;
        await log.putAttempt({ ...a5, status: 'in-flight' });
        const ok = { ...a5, status: 'ok', endedAt: t0 + 3102, providerMessageId: 'p-5' } as const;
        expect(await log.finish('d5', [ok], { status: 'sent', providerMessageId: 'p-5', updatedAt: t0 + 3102 })).toBe(
          true,
        );
        const d5 = await log.get('d5');
        expect(d5?.status).toBe('sent');
        expect(d5?.history.map((a) => [a.id, a.status, a.providerMessageId])).toEqual([['a5', 'ok', 'p-5']]);
        expect((await log.query({ providerMessageId: 'p-5' })).map((r) => r.id)).toEqual(['d5']);
        expect((await log.query({ status: 'sending' })).map((r) => r.id)).not.toContain('d5');
        // without a record: false, and the attempts are kept for the record written next
        const a6 = { id: 'a6', deliveryId: 'd6', route: 'smtp(a)', status: 'ok', startedAt: t0 + 3200 } as const;
        expect(await log.finish('d6', [a6], { status: 'sent' })).toBe(false);
        await log.put({ ...rec('d6', 'org-c', 'sent', t0 + 3200, 'dee@example.org') });
        expect((await log.get('d6'))?.history.map((a) => a.id)).toEqual(['a6']);
        // a record replaced whole keeps its attempts, and loses the changes made over the old one
        await log.put({ ...rec('d5', 'org-c', 'dead', t0 + 3100, 'dee@example.org'), reason: 'replaced' });
        const replaced = await log.get('d5');
        expect(replaced).toMatchObject({ status: 'dead', reason: 'replaced' });
        expect(replaced && 'providerMessageId' in replaced).toBe(false);
        expect(replaced?.history.map((a) => [a.id, a.status])).toEqual([['a5', 'ok']]);
        expect((await log.query({ status: 'sent' })).map((r) => r.id)).not.toContain('d5');
        expect((await log.query({ status: 'dead' })).map((r) => r.id)).toContain('d5');
      }
    });

    it('log: an attempt given the record its queued job carried writes that record (sending) when the log has none, and leaves one it has', async () => {
      const { log } = await open();
      const t0 = Date.now() - 5_000;
      const carried: DeliveryRecord = {
        id: 'c1',
        organisation: 'org-c',
        messageId: '<c1@example.org>',
        via: 'queue',
        status: 'queued',
        from: 'sender@example.org',
        recipients: ['ada@example.org'],
        subject: 'carried',
        tags: ['report'],
        content: { text: 'the body, kept', attachments: [] },
        attempts: 0,
        unknown: false,
        createdAt: t0,
        updatedAt: t0,
      };
      await log.putAttempt(
        { id: 'ca1', deliveryId: 'c1', route: 'smtp(a)', status: 'in-flight', startedAt: t0 + 5 },
        carried,
      );
      const c1 = await log.get('c1');
      expect(c1).toMatchObject({ ...carried, status: 'sending' });
      expect(c1?.history.map((a) => [a.id, a.status])).toEqual([['ca1', 'in-flight']]);
      const ids = (q: Parameters<DeliveryLog['query']>[0]) => idsOf(log, q);
      expect(await ids({ status: 'sending' })).toEqual(['c1']);
      expect(await ids({ status: 'queued' })).toEqual([]);
      expect(await ids({ organisation: 'org-c' })).toEqual(['c1']);
      expect(await ids({ recipient: 'ADA@example.org' })).toEqual(['c1']);
      expect(await ids({ messageId: '<c1@example.org>' })).toEqual(['c1']);
      expect(await ids({ since: t0, until: t0 + 1 })).toEqual(['c1']);
      // a record the log has is left as it is
      expect(await log.update('c1', { status: 'sent', updatedAt: t0 + 10 })).toBe(true);
      await log.putAttempt(
        { id: 'ca2', deliveryId: 'c1', route: 'smtp(b)', status: 'failed', startedAt: t0 + 20, endedAt: t0 + 21 },
        { ...carried, subject: 'replaced?' },
      );
      const again = await log.get('c1');
      expect(again).toMatchObject({ status: 'sent', subject: 'carried', updatedAt: t0 + 10 });
      expect(again?.history.map((a) => a.id)).toEqual(['ca1', 'ca2']);
      expect(await ids({ status: 'sent' })).toEqual(['c1']);
      expect(await ids({ status: 'sending' })).toEqual([]);
    });

    it('log: finds deliveries by Message-ID and provider id, and keeps provider events beside the record', async () => {
      const { log } = await open();
      const t0 = Date.now() - 5_000;
      const base = (id: string, messageId: string, at: number): DeliveryRecord => ({
        id,
        organisation: 'org-a',
        messageId,
        via: 'send',
        status: 'sending',
        from: 'sender@example.org',
        recipients: ['same@example.org'],
        subject: 'hi',
        tags: [],
        attempts: 0,
        unknown: false,
        createdAt: at,
        updatedAt: at,
      });
      // several deliveries to one recipient; one Message-ID in two organisations
      await log.put(base('m1', '<one@example.org>', t0));
      await log.put(base('m2', '<two@example.org>', t0 + 1));
      await log.put({ ...base('m3', '<one@example.org>', t0 + 2), organisation: 'org-b' });
      await log.put({ ...base('m4', '<four@example.org>', t0 + 3), status: 'sent', providerMessageId: 'prov-4' });
      // the provider id usually arrives with the outcome, by update
      expect(await log.update('m2', { status: 'sent', providerMessageId: 'prov-2', updatedAt: t0 + 10 })).toBe(true);
      const ids = (q: Parameters<DeliveryLog['query']>[0]) => idsOf(log, q);
      expect(await ids({ messageId: '<one@example.org>' })).toEqual(['m3', 'm1']);
      expect(await ids({ organisation: 'org-a', messageId: '<one@example.org>' })).toEqual(['m1']);
      expect(await ids({ organisation: 'org-a', providerMessageId: 'prov-2' })).toEqual(['m2']);
      expect(await ids({ providerMessageId: 'prov-4', recipient: 'SAME@example.org' })).toEqual(['m4']);
      expect(await ids({ organisation: 'org-b', providerMessageId: 'prov-2' })).toEqual([]);
      expect(await ids({ messageId: '<none@example.org>' })).toEqual([]);
      expect(await ids({ providerMessageId: 'prov-none' })).toEqual([]);

      // provider events: appended, oldest first, without touching the engine's own fields
      expect(
        await log.addEvent('m2', {
          type: 'delivered',
          at: t0 + 20,
          provider: 'sendgrid',
          recipient: 'same@example.org',
        }),
      ).toBe(true);
      expect(
        await log.addEvent('m2', {
          type: 'bounced',
          at: t0 + 30,
          provider: 'sendgrid',
          recipient: 'same@example.org',
          permanent: true,
          code: '5.1.1',
          detail: '550 no such user',
        }),
      ).toBe(true);
      expect(await log.addEvent('nope', { type: 'opened', at: t0, provider: 'sendgrid' })).toBe(false);
      const m2 = await log.get('m2');
      expect(m2).toMatchObject({ status: 'sent', providerMessageId: 'prov-2', updatedAt: t0 + 10 });
      expect(m2?.kind).toBeUndefined();
      expect(m2?.reason).toBeUndefined();
      expect(m2?.events).toEqual([
        { type: 'delivered', at: t0 + 20, provider: 'sendgrid', recipient: 'same@example.org' },
        {
          type: 'bounced',
          at: t0 + 30,
          provider: 'sendgrid',
          recipient: 'same@example.org',
          permanent: true,
          code: '5.1.1',
          detail: '550 no such user',
        },
      ]);
      expect((await log.get('m1'))?.events).toEqual([]);
      // an update after events keeps them
      await log.update('m2', { attempts: 1, updatedAt: t0 + 40 });
      expect((await log.get('m2'))?.events).toHaveLength(2);
      // the latest MAX_DELIVERY_EVENTS are kept
      for (let i = 0; i < MAX_DELIVERY_EVENTS + 5; i++)
        await log.addEvent('m1', { type: 'opened', at: t0 + 100 + i, provider: 'mailgun' });
      const opened = (await log.get('m1'))?.events ?? [];
      expect(opened).toHaveLength(MAX_DELIVERY_EVENTS);
      expect(opened[0]?.at).toBe(t0 + 105);
      expect(opened.at(-1)?.at).toBe(t0 + 104 + MAX_DELIVERY_EVENTS);
      // retention takes the events and the lookups with the record
      // (m1 and m3 are still sending: retention keeps them)
      expect(await log.prune({ recordsBefore: Date.now() + 1, contentBefore: 0 })).toBe(2);
      expect(await log.get('m2')).toBeUndefined();
      expect(await log.addEvent('m2', { type: 'opened', at: t0, provider: 'sendgrid' })).toBe(false);
      expect(await ids({ providerMessageId: 'prov-2' })).toEqual([]);
      expect(await ids({ messageId: '<two@example.org>' })).toEqual([]);
      expect(await ids({ messageId: '<one@example.org>' })).toEqual(['m3', 'm1']);
      expect((await log.get('m1'))?.events).toHaveLength(MAX_DELIVERY_EVENTS);
    });

    it('log: claim of a send key — concurrent claims write one record; a certain failure frees the key, an unknown one does not', async () => {
      const { log } = await open();
      const rec = (id: string, organisation: string, idempotencyKey?: string): DeliveryRecord => ({
        id,
        organisation,
        ...(idempotencyKey !== undefined ? { idempotencyKey } : {}),
        messageId: `<${id}@example.org>`,
        via: 'send',
        status: 'sending',
        from: 'sender@example.org',
        recipients: ['ada@example.org'],
        subject: 'hi',
        tags: [],
        attempts: 0,
        unknown: false,
        createdAt: Date.now(),
        updatedAt: Date.now(),
      });
      const claims = await Promise.all(
        Array.from({ length: 30 }, (_v, i) => log.claim(rec(`c${i}`, 'org-a', 'reset:42'))),
      );
      const winners = claims.filter((c) => c.created);
      expect(winners).toHaveLength(1);
      const holder = winners[0]!.id;
      expect(new Set(claims.map((c) => c.id))).toEqual(new Set([holder]));
      expect(await log.query({ organisation: 'org-a' })).toHaveLength(1);
      // the same key in another organisation, another key, and no key are their own
      expect(await log.claim(rec('other-org', 'org-b', 'reset:42'))).toEqual({ id: 'other-org', created: true });
      expect(await log.claim(rec('other-key', 'org-a', 'reset:43'))).toEqual({ id: 'other-key', created: true });
      expect(await log.claim(rec('no-key', 'org-a'))).toEqual({ id: 'no-key', created: true });
      // sent: still held
      await log.update(holder, { status: 'sent', updatedAt: Date.now() });
      expect(await log.claim(rec('late', 'org-a', 'reset:42'))).toEqual({ id: holder, created: false });
      // failed for certain: the next claim takes the key over (once, under concurrency)
      await log.update('other-key', { status: 'failed', unknown: false, updatedAt: Date.now() });
      const retake = await Promise.all(
        Array.from({ length: 10 }, (_v, i) => log.claim(rec(`retry${i}`, 'org-a', 'reset:43'))),
      );
      expect(retake.filter((c) => c.created)).toHaveLength(1);
      const retaken = retake.find((c) => c.created)!.id;
      expect(retake.every((c) => c.id === retaken)).toBe(true);
      // failed with an unknown outcome: held
      await log.update(retaken, { status: 'failed', unknown: true, updatedAt: Date.now() });
      expect(await log.claim(rec('after-unknown', 'org-a', 'reset:43'))).toEqual({ id: retaken, created: false });
      // a pruned record frees its key
      await log.update(retaken, { status: 'failed', unknown: false, updatedAt: Date.now() });
      expect(await log.prune({ recordsBefore: Date.now() + 1, contentBefore: 0 })).toBeGreaterThan(0);
      expect((await log.claim(rec('after-prune', 'org-a', 'reset:42'))).created).toBe(true);
    });

    it('mailer: 20 concurrent sends with one idempotency key put one mail on the wire; later sends answer its receipt', async () => {
      const stores = await open();
      let refuse = false;
      const sink = await startSmtpSink({
        behaviour: (stage) =>
          stage === 'mail' && refuse ? { code: 451, message: '4.3.0 try again later' } : undefined,
      });
      const mailer = createMailer({
        log: stores.log,
        state: stores.state,
        suppression: stores.suppression,
        organisations: () => [{ type: 'smtp', name: 'sink', host: '127.0.0.1', port: sink.port, tls: { ca: sink.ca } }],
        rest: { unavailable: 1 },
      });
      try {
        const mail = {
          from: 'school@example.org',
          to: 'parent@example.org',
          subject: 'Your reset link',
          text: 'hello',
        };
        const receipts = await Promise.all(
          Array.from({ length: 20 }, () =>
            mailer.send(mail, { organisation: 'school-a', idempotencyKey: 'reset:parent:1' }),
          ),
        );
        await new Promise((r) => setTimeout(r, 300));
        expect(sink.received).toHaveLength(1);
        expect(sink.received[0]!.parsed.subject).toBe('Your reset link');
        const sent = receipts.filter((r) => !r.duplicate);
        expect(sent).toHaveLength(1);
        const first = sent[0]!;
        const duplicates = receipts.filter((r) => r.duplicate);
        expect(duplicates).toHaveLength(19);
        const [record] = await stores.log.query({ organisation: 'school-a' });
        expect(record).toMatchObject({ status: 'sent', idempotencyKey: 'reset:parent:1', via: 'send' });
        for (const d of duplicates) {
          expect(d).toMatchObject({
            route: first.route,
            messageId: first.messageId,
            accepted: ['parent@example.org'],
            acceptedBy: first.acceptedBy,
            attempts: [],
            duplicate: { deliveryId: record!.id },
          });
          expect(d.providerMessageId).toBe(first.providerMessageId);
        }
        // the message's own key counts too; another organisation has its own keys
        const again = await mailer.send({ ...mail, idempotencyKey: 'reset:parent:1' }, { organisation: 'school-a' });
        expect(again.duplicate?.deliveryId).toBe(record!.id);
        await mailer.send(mail, { organisation: 'school-b', idempotencyKey: 'reset:parent:1' });
        expect(sink.received).toHaveLength(2);

        // a send that failed for certain may be tried again with its key; it then sends once
        refuse = true;
        await expect(
          mailer.send(mail, { organisation: 'school-a', idempotencyKey: 'welcome:parent:1' }),
        ).rejects.toMatchObject({ kind: 'unavailable' });
        refuse = false;
        await new Promise((r) => setTimeout(r, 20));
        const retried = await Promise.all(
          Array.from({ length: 5 }, () =>
            mailer.send(mail, { organisation: 'school-a', idempotencyKey: 'welcome:parent:1' }),
          ),
        );
        expect(retried.filter((r) => !r.duplicate)).toHaveLength(1);
        expect(sink.received).toHaveLength(3);
      } finally {
        await mailer.close();
        await sink.close();
      }
    });

    it('mailer: queued mail is in the log before a worker takes it (scheduled mail too), by id and by organisation, status, recipient and time, and once after it is sent', async () => {
      const stores = await open();
      const sink = await startSmtpSink();
      const mailer = sinkMailer(stores, sink);
      const pause = () => new Promise((r) => setTimeout(r, 3));
      const ids = (q: Parameters<DeliveryLog['query']>[0]) => idsOf(stores.log, q);
      try {
        const t0 = Date.now();
        const from = 'school@example.org';
        const a = await mailer.enqueue(
          { from, to: 'Parent1@example.org', subject: 'Now', text: 'a' },
          { organisation: 'school-a' },
        );
        await pause();
        const keyed = { from, to: 'parent2@example.org', subject: 'Keyed', text: 'b' };
        const b = await mailer.enqueue(keyed, { organisation: 'school-a', idempotencyKey: 'report:2' });
        await pause();
        const c = await mailer.enqueue(
          { from, to: 'parent3@example.org', subject: 'Later', text: 'c' },
          { organisation: 'school-b', delay: 3_600_000 },
        );
        expect(await mailer.enqueue(keyed, { organisation: 'school-a', idempotencyKey: 'report:2' })).toEqual({
          id: b.id,
          duplicate: true,
          messageId: b.messageId,
        });
        expect(await stores.log.get(a.id)).toMatchObject({
          id: a.id,
          status: 'queued',
          via: 'queue',
          organisation: 'school-a',
          recipients: ['parent1@example.org'],
          subject: 'Now',
          messageId: a.messageId,
          attempts: 0,
          history: [],
        });
        expect(await stores.log.get(b.id)).toMatchObject({ status: 'queued', idempotencyKey: 'report:2' });
        expect(await ids({ organisation: 'school-a' })).toEqual([b.id, a.id]);
        expect(await ids({ organisation: 'school-b' })).toEqual([c.id]);
        expect(await ids({ status: 'queued' })).toEqual([c.id, b.id, a.id]);
        expect(await ids({ status: ['queued', 'sent'], recipient: 'PARENT2@example.org' })).toEqual([b.id]);
        expect(await ids({ since: t0, limit: 2 })).toEqual([c.id, b.id]);
        expect(await ids({ offset: 2 })).toEqual([a.id]);
        expect(await ids({ status: 'sent' })).toEqual([]);

        mailer.startWorker({ pollInterval: 20 });
        await until(
          async () =>
            (await stores.log.get(a.id))?.status === 'sent' && (await stores.log.get(b.id))?.status === 'sent',
        );
        expect(await ids({ organisation: 'school-a' })).toEqual([b.id, a.id]);
        expect(await ids({ status: 'sent' })).toEqual([b.id, a.id]);
        expect(await ids({ status: 'queued' })).toEqual([c.id]);
        expect(await ids({})).toEqual([c.id, b.id, a.id]);
        const sent = (await stores.log.get(a.id))!;
        expect(sent).toMatchObject({
          status: 'sent',
          route: 'sink',
          attempts: 1,
          subject: 'Now',
          createdAt: expect.any(Number),
        });
        expect(sent.history.map((x) => [x.status, x.route])).toEqual([['ok', 'sink']]);
        expect(sink.received.map((m) => m.parsed.subject).sort()).toEqual(['Keyed', 'Now']);
      } finally {
        await mailer.close();
        await sink.close();
      }
    });

    it('mailer: a queued mail whose record was never written (a crash between the queue and the log) is sent once, and its record is written whole', async () => {
      const stores = await open();
      const sink = await startSmtpSink();
      // the log loses the enqueue's record, as a process killed between its two writes would
      let dropped = 0;
      const log = new Proxy(stores.log, {
        get(target, p) {
          if (p === 'put' && dropped === 0)
            return () => {
              dropped++;
            };
          const v: unknown = Reflect.get(target, p, target);
          return typeof v === 'function' ? v.bind(target) : v;
        },
      });
      const mailer = sinkMailer(stores, sink, log);
      try {
        const mail = { from: 'school@example.org', to: 'Parent@example.org', subject: 'Lost record', text: 'hello' };
        const r = await mailer.enqueue(mail, { organisation: 'school-a' });
        expect(dropped).toBe(1);
        expect(await stores.log.get(r.id)).toBeUndefined();
        mailer.startWorker({ pollInterval: 20 });
        await until(async () => (await stores.log.get(r.id))?.status === 'sent');
        const record = (await stores.log.get(r.id))!;
        expect(record).toMatchObject({
          via: 'queue',
          organisation: 'school-a',
          subject: 'Lost record',
          recipients: ['parent@example.org'],
          messageId: r.messageId,
          attempts: 1,
          route: 'sink',
        });
        expect(record.history.map((a) => [a.status, a.route])).toEqual([['ok', 'sink']]);
        expect((await stores.log.query({ organisation: 'school-a', status: 'sent' })).map((x) => x.id)).toEqual([r.id]);
        expect(sink.received.map((m) => m.parsed.subject)).toEqual(['Lost record']);
      } finally {
        await mailer.close();
        await sink.close();
      }
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
      // every source survives the round trip
      for (const [i, source] of (['bounce', 'complaint', 'unsubscribe'] as const).entries()) {
        await suppression.add({
          organisation: 'org-c',
          address: `${source}@example.org`,
          reason: source,
          source,
          createdAt: 10 + i,
        });
      }
      expect((await suppression.list('org-c')).map((e) => [e.address, e.source])).toEqual([
        ['unsubscribe@example.org', 'unsubscribe'],
        ['complaint@example.org', 'complaint'],
        ['bounce@example.org', 'bounce'],
      ]);
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

    it('route state: several windows are counted all or nothing, so concurrent sends never over-spend any window', async () => {
      const { state } = await open();
      const day = { type: 'fixed', ms: 86_400_000 } as const;
      const rolling = { type: 'rolling', ms: 86_400_000 } as const;
      const limits = [
        { window: day, limit: 10 },
        { window: rolling, limit: 3 },
      ];
      // the later window is nearly used up (2 of 3), counted on its own
      for (let i = 0; i < 2; i++) expect((await state.consume('quota:org:two', rolling, 3)).allowed).toBe(true);
      const results = await Promise.all(Array.from({ length: 40 }, () => state.consumeAll('quota:org:two', limits)));
      expect(results.filter((r) => r.allowed)).toHaveLength(1);
      const refused = results.find((r) => !r.allowed)!;
      expect(refused.windows.map((w) => [w.allowed, w.used, w.limit])).toEqual([
        [true, 1, 10],
        [false, 3, 3],
      ]);
      expect(refused.windows[0]!.resetAt % 86_400_000).toBe(0);
      expect(refused.windows[1]!.resetAt).toBeGreaterThan(Date.now() + 86_000_000);
      // the earlier window lost no unit to the refused ones
      const peek = await state.consumeAll('quota:org:two', limits, { amount: 0 });
      expect(peek.windows.map((w) => w.used)).toEqual([1, 3]);
      expect((await state.consume('quota:org:two', day, 10, { amount: 0 })).used).toBe(1);

      // the other way round: the earlier window nearly used up, many concurrent units of 2
      const tight = [
        { window: { type: 'fixed', ms: 1000 } as const, limit: 5 },
        { window: day, limit: 100 },
      ];
      const t = Math.floor(Date.now() / 1000) * 1000 + 10;
      await state.consumeAll('quota:org:three', tight, { now: t, amount: 4 });
      const pairs = await Promise.all(
        Array.from({ length: 20 }, () => state.consumeAll('quota:org:three', tight, { now: t, amount: 2 })),
      );
      expect(pairs.filter((r) => r.allowed)).toHaveLength(0);
      const after = await state.consumeAll('quota:org:three', tight, { now: t, amount: 0 });
      expect(after.windows.map((w) => w.used)).toEqual([4, 4]);

      // through the quota wrapper: concurrent sends on a route whose rolling window has one unit left
      const outbox = createOutbox();
      const route = withQuota(capture({ outbox, name: 'cap' }), { perDay: 50, rolling24h: 3 }, state, 'org-two:');
      await route.send(message(1));
      await route.send(message(2));
      const sends = await Promise.allSettled(Array.from({ length: 25 }, (_v, i) => route.send(message(i))));
      expect(sends.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      for (const r of sends)
        if (r.status === 'rejected') expect(r.reason).toMatchObject({ kind: 'limited', code: 'EQUOTA' });
      expect(await outbox.list()).toHaveLength(3);
      expect((await readQuota(route))?.map((q) => [q.window, q.used, q.exhausted])).toEqual([
        ['perDay', 3, false],
        ['rolling24h', 3, true],
      ]);
    });

    it('route state: a quota is read live (amount 0 counts nothing) — used, left, reset and exhaustion per window', async () => {
      const { state } = await open();
      const outbox = createOutbox();
      const route = withQuota(capture({ outbox, name: 'cap' }), { perDay: 5, rolling24h: 3 }, state, 'org-q:');
      const empty = await readQuota(route);
      expect(empty?.map((q) => [q.window, q.limit, q.used, q.left, q.exhausted])).toEqual([
        ['perDay', 5, 0, 5, false],
        ['rolling24h', 3, 0, 3, false],
      ]);
      const msg = message(7);
      await route.send(msg);
      await route.send(msg);
      // reading many times counts nothing
      await Promise.all([readQuota(route), readQuota(route), readQuota(route)]);
      const two = await readQuota(route);
      expect(two?.map((q) => [q.window, q.used, q.left, q.exhausted])).toEqual([
        ['perDay', 2, 3, false],
        ['rolling24h', 2, 1, false],
      ]);
      expect(two?.[0]?.resetAt).toBe(Math.floor(Date.now() / 86_400_000) * 86_400_000 + 86_400_000);
      expect(two?.[1]?.resetAt).toBeGreaterThan(Date.now() + 86_000_000);
      await route.send(msg);
      const full = await readQuota(route);
      expect(full?.map((q) => [q.window, q.used, q.left, q.exhausted])).toEqual([
        ['perDay', 3, 2, false],
        ['rolling24h', 3, 0, true],
      ]);
      await expect(route.send(msg)).rejects.toMatchObject({ kind: 'limited', code: 'EQUOTA' });
      expect(await outbox.list()).toHaveLength(3);
      expect((await readQuota(route))?.map((q) => q.used)).toEqual([3, 3]);
      // another organisation's counters are its own; a route without a quota has none
      const other = withQuota(capture({ outbox, name: 'cap' }), { perDay: 5 }, state, 'org-r:');
      expect((await readQuota(other))?.[0]?.used).toBe(0);
      expect(await readQuota(capture({ outbox }))).toBeUndefined();
    });
  });
}
