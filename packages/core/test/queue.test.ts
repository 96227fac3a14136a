import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createMailer, type Mailer, type MailerEvents, type MailerOptions, sqliteStores } from '../src/index.js';
import { type SinkAction, type SinkStage, type SmtpSink, startSmtpSink } from '../src/testing/index.js';
import { mail, until } from './fixtures/wait.js';

const dir = mkdtempSync(join(tmpdir(), 'mailvia-queue-'));
const cleanup: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let dbs = 0;
const dbPath = () => join(dir, `q${dbs++}.db`);

async function sink(
  behaviour?: (stage: SinkStage, d: { address?: string; mail?: { parsed: { subject?: string } } }) => SinkAction,
  options: { starttls?: boolean } = {},
) {
  const s = await startSmtpSink({ ...options, ...(behaviour ? { behaviour: behaviour as never } : {}) });
  cleanup.push(() => s.close());
  return s;
}

const route = (s: SmtpSink, extra: Record<string, unknown> = {}) => ({
  type: 'smtp',
  host: '127.0.0.1',
  port: s.port,
  tls: { ca: s.ca },
  ...extra,
});

function mailer(routes: Record<string, unknown[]>, options: Partial<MailerOptions> = {}, path = dbPath()): Mailer {
  const m = createMailer({
    ...sqliteStores({ path }),
    organisations: (id) => routes[id] as never,
    delivery: { backoff: { initial: 50, max: 200 } },
    rest: { unavailable: 150 },
    ...options,
  });
  cleanup.push(() => m.close());
  return m;
}

const messageIdOf = (raw: Buffer) => /^Message-ID:\s*(<[^>]+>)/im.exec(raw.toString())?.[1];

describe('enqueue and the worker (embedded SQLite store, real SMTP sink)', () => {
  it('stores the message durably before enqueue resolves; a worker sends it once, with its Message-ID; the log tells', async () => {
    const a = await sink();
    const path = dbPath();
    const m = mailer({ school: [route(a)] }, {}, path);
    const r = await m.enqueue(mail(1), { organisation: 'school' });
    expect(r.duplicate).toBe(false);
    // another connection to the same file sees it: it is on disk, not in this process
    const other = sqliteStores({ path });
    cleanup.push(() => other.close());
    expect((await other.queue.get(r.id))?.state).toBe('waiting');
    expect((await other.log.get(r.id))?.status).toBe('queued');

    m.startWorker({ pollInterval: 20 });
    await a.waitFor(1);
    await until(async () => (await m.log!.get(r.id))?.status === 'sent');
    const rec = (await m.log!.get(r.id))!;
    expect(messageIdOf(a.received[0]!.raw)).toBe(r.messageId);
    expect(rec.route).toContain(String(a.port));
    expect(rec.attempts).toBe(1);
    expect(rec.history.map((h) => h.status)).toEqual(['ok']);
    expect(rec.history[0]!.response).toContain('250');
    await until(async () => (await m.queue!.get(r.id))?.state === 'sent');
    await new Promise((res) => setTimeout(res, 200));
    expect(a.received).toHaveLength(1);
  });

  it('50 parallel enqueues with one idempotency key send one mail', async () => {
    const a = await sink();
    const m = mailer({ school: [route(a)] });
    const results = await Promise.all(
      Array.from({ length: 50 }, (_x, i) =>
        m.enqueue(mail(`dup ${i}`), { organisation: 'school', idempotencyKey: 'invoice:77' }),
      ),
    );
    expect(results.filter((r) => !r.duplicate)).toHaveLength(1);
    expect(new Set(results.map((r) => r.id)).size).toBe(1);
    m.startWorker({ pollInterval: 20, concurrency: 8 });
    await a.waitFor(1);
    // the same key later (a retried HTTP request) is still one mail
    expect((await m.enqueue(mail('late'), { organisation: 'school', idempotencyKey: 'invoice:77' })).duplicate).toBe(
      true,
    );
    await new Promise((res) => setTimeout(res, 500));
    expect(a.received).toHaveLength(1);
    expect(a.received[0]!.parsed.subject).toMatch(/^mail dup \d+$/);
  });

  it('retries a transient failure with back-off until it goes; failed attempts are logged with their code', async () => {
    let failures = 2;
    const a = await sink((stage) => {
      if (stage === 'mail' && failures > 0) {
        failures--;
        return { code: 451, message: '4.3.0 Temporary local problem' };
      }
      return undefined;
    });
    const m = mailer({ school: [route(a)] });
    const retrying: MailerEvents['retrying'][0][] = [];
    m.on('retrying', (e) => retrying.push(e));
    const r = await m.enqueue(mail('flaky'), { organisation: 'school' });
    m.startWorker({ pollInterval: 20 });
    await a.waitFor(1, 15_000);
    await until(async () => (await m.log!.get(r.id))?.status === 'sent');
    const rec = (await m.log!.get(r.id))!;
    expect(rec.attempts).toBe(3);
    const failed = rec.history.filter((h) => h.status === 'failed');
    expect(failed).toHaveLength(2);
    expect(failed[0]!.code).toContain('451');
    expect(failed[0]!.kind).toBe('unavailable');
    // refused at MAIL FROM: the envelope phase, with the route and timestamps
    expect(failed[0]).toMatchObject({ phase: 'envelope', route: expect.any(String), organisation: 'school' });
    expect(failed[0]!.endedAt!).toBeGreaterThanOrEqual(failed[0]!.startedAt);
    const ok = rec.history.find((h) => h.status === 'ok')!;
    expect(ok.endedAt!).toBeGreaterThanOrEqual(ok.startedAt);
    expect(ok.response).toMatch(/^250/);
    // counted attempts 1 and 2; waits for the resting route in between are not counted
    expect([...new Set(retrying.map((e) => e.attempts))]).toEqual([1, 2]);
  });

  it('a permanent refusal goes to the dead-letter state and feeds the suppression list, checked before sending', async () => {
    let askedForGone = 0;
    const a = await sink((stage, d) => {
      if (stage !== 'rcpt' || d.address !== 'gone@example.org') return undefined;
      askedForGone++;
      return { code: 550, message: '5.1.1 No such user here' };
    });
    const m = mailer({ school: [route(a)] });
    const dead: MailerEvents['dead'][0][] = [];
    m.on('dead', (e) => dead.push(e));
    m.startWorker({ pollInterval: 20 });
    const r = await m.enqueue(mail('to gone', { to: 'gone@example.org' }), { organisation: 'school' });
    await until(() => dead.length === 1);
    const rec = (await m.log!.get(r.id))!;
    expect(rec.status).toBe('dead');
    expect(rec.kind).toBe('refused');
    expect(rec.reason).toContain('5.1.1');
    await until(async () => (await m.queue!.get(r.id))?.state === 'dead');
    const entry = await m.suppression!.has('school', 'GONE@example.org');
    expect(entry?.source).toBe('refused');
    expect(entry?.code).toContain('550');
    // suppressed now: never offered to the server again
    const r2 = await m.enqueue(mail('again', { to: 'gone@example.org' }), { organisation: 'school' });
    await until(() => dead.length === 2);
    const r2rec = (await m.log!.get(r2.id))!;
    expect(r2rec.reason).toContain('suppression list');
    // the attempt announced while the list was read ends as skipped, not in flight
    expect(r2rec.history.map((h) => [h.status, h.error])).toEqual([
      ['skipped', expect.stringContaining('suppression')],
    ]);
    await expect(m.send(mail('now', { to: 'gone@example.org' }), { organisation: 'school' })).rejects.toMatchObject({
      kind: 'refused',
      code: 'ESUPPRESSED',
    });
    // other recipients of a mail still get it; the suppressed one is left out of the envelope
    await m.send(mail('both', { to: ['gone@example.org', 'parent@example.org'] }), { organisation: 'school' });
    expect(a.received.map((x) => x.parsed.subject)).toEqual(['mail both']);
    expect(a.received[0]!.to).toEqual(['parent@example.org']);
    expect(askedForGone).toBe(1);
    // another organisation is not affected, and clearing the entry lets mail through
    expect(await m.suppression!.has('other', 'gone@example.org')).toBeUndefined();
    expect(await m.suppression!.remove('school', 'gone@example.org')).toBe(true);
    expect(await m.suppression!.has('school', 'gone@example.org')).toBeUndefined();
    // offered to the server again, which refuses it again (not the list)
    await expect(m.send(mail('cleared', { to: 'gone@example.org' }), { organisation: 'school' })).rejects.toMatchObject(
      { kind: 'refused', code: expect.stringContaining('550') },
    );
    expect(askedForGone).toBe(2);
  });

  it('a resting route is skipped without a connection; the attempt announced for it ends as skipped, not in flight', async () => {
    const b = await sink();
    // nothing listens on a: refused at once, then resting
    const closed = await sink();
    const port = closed.port;
    await closed.close();
    const m = mailer(
      { school: [{ type: 'smtp', host: '127.0.0.1', port }, route(b)] },
      { rest: { unavailable: 60_000 } },
    );
    m.startWorker({ pollInterval: 20, concurrency: 1 });
    const first = await m.enqueue(mail('r1'), { organisation: 'school' });
    await until(async () => (await m.log!.get(first.id))?.status === 'sent');
    const second = await m.enqueue(mail('r2'), { organisation: 'school' });
    await until(async () => (await m.log!.get(second.id))?.status === 'sent');
    const h1 = (await m.log!.get(first.id))!.history;
    const h2 = (await m.log!.get(second.id))!.history;
    expect(h1.map((h) => h.status)).toEqual(['failed', 'ok']);
    expect(h2.map((h) => [h.status, h.error?.startsWith('resting until') ?? false])).toEqual([
      ['skipped', true],
      ['ok', false],
    ]);
    expect(b.received.map((x) => x.parsed.subject)).toEqual(['mail r1', 'mail r2']);
  });

  it('an unknown outcome is retried on the same route with the same Message-ID, never on the next route', async () => {
    let cut = 1;
    const a = await sink((stage) => {
      if (stage === 'data' && cut > 0) {
        cut--;
        return 'cut';
      }
      return undefined;
    });
    const b = await sink();
    const m = mailer({ school: [route(a), route(b)] });
    const unknown: MailerEvents['unknown'][0][] = [];
    m.on('unknown', (e) => unknown.push(e));
    const r = await m.enqueue(mail('maybe'), { organisation: 'school' });
    m.startWorker({ pollInterval: 20 });
    await a.waitFor(2, 15_000);
    await until(async () => (await m.log!.get(r.id))?.status === 'sent');
    expect(a.received.map((x) => messageIdOf(x.raw))).toEqual([r.messageId, r.messageId]);
    expect(b.received).toHaveLength(0);
    expect(b.connections).toBe(0);
    const rec = (await m.log!.get(r.id))!;
    expect(rec.unknown).toBe(true);
    expect(rec.history.map((h) => h.status)).toEqual(['unknown', 'ok']);
    expect(new Set(rec.history.map((h) => h.route)).size).toBe(1);
    expect(unknown).toHaveLength(1);
    expect((await m.log!.query({ unknown: true })).map((x) => x.id)).toEqual([r.id]);
  });

  it('counts a quota per organisation and route: warns at 80%, skips the used-up route without a connection, waits when all are used up', async () => {
    const a = await sink();
    const b = await sink();
    const solo = await sink(undefined, { starttls: false });
    const m = mailer({
      school: [route(a, { quota: { perDay: 5 } }), route(b)],
      // as a URL, the quota parameter works on any route
      small: [`smtp://127.0.0.1:${solo.port}?quota=2/day`],
    });
    const events: string[] = [];
    m.on('quota-warning', (e) => events.push(`warning ${e.used}/${e.limit} ${e.window}`));
    m.on('quota-exhausted', (e) => events.push(`exhausted ${e.used}/${e.limit}`));
    m.startWorker({ pollInterval: 20, concurrency: 1 });
    for (let i = 0; i < 7; i++) await m.enqueue(mail(`q${i}`), { organisation: 'school' });
    await until(() => a.received.length + b.received.length === 7);
    expect(a.received).toHaveLength(5);
    expect(b.received).toHaveLength(2);
    expect(events).toEqual(['warning 4/5 perDay', 'exhausted 5/5']);

    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await m.enqueue(mail(`s${i}`), { organisation: 'small' })).id);
    await solo.waitFor(2);
    await until(async () => (await m.log!.get(ids[2]!))?.nextAttemptAt !== undefined);
    await new Promise((res) => setTimeout(res, 300));
    expect(solo.received).toHaveLength(2);
    const waiting = (await m.log!.get(ids[2]!))!;
    // waits for the next UTC day, without using up an attempt
    expect(waiting.status).toBe('queued');
    expect(waiting.attempts).toBe(0);
    expect(waiting.kind).toBe('limited');
    const midnight = Math.ceil(Date.now() / 86_400_000) * 86_400_000;
    expect(waiting.nextAttemptAt).toBeGreaterThanOrEqual(midnight);
    expect(waiting.nextAttemptAt).toBeLessThan(midnight + 120_000);
  });

  it('resends a dead delivery with its id and Message-ID; two concurrent resends send once', async () => {
    let refuse = true;
    const a = await sink((stage) =>
      stage === 'data' && refuse ? { code: 554, message: '5.6.0 Message content refused' } : undefined,
    );
    const m = mailer({ school: [route(a)] });
    const dead: string[] = [];
    m.on('dead', (e) => dead.push(e.id));
    m.startWorker({ pollInterval: 20 });
    const r = await m.enqueue(mail('blocked'), { organisation: 'school', idempotencyKey: 'k-1' });
    await until(() => dead.length === 1);
    expect((await m.log!.get(r.id))?.status).toBe('dead');
    // message-level refusal: no recipient is suppressed
    expect(await m.suppression!.has('school', 'parent@example.org')).toBeUndefined();
    refuse = false;
    const again = await Promise.all([m.resend(r.id), m.resend(r.id)]);
    expect(again.map((x) => x.id)).toEqual([r.id, r.id]);
    expect(again.filter((x) => !x.duplicate)).toHaveLength(1);
    await a.waitFor(1);
    await until(async () => (await m.log!.get(r.id))?.status === 'sent');
    await new Promise((res) => setTimeout(res, 300));
    expect(a.received).toHaveLength(1);
    expect(messageIdOf(a.received[0]!.raw)).toBe(r.messageId);
    await expect(m.resend(r.id)).rejects.toMatchObject({ code: 'EALREADYSENT' });
    // it kept its idempotency key: the same key is still this delivery, and sends nothing more
    expect((await m.log!.get(r.id))?.idempotencyKey).toBe('k-1');
    const same = await m.enqueue(mail('blocked'), { organisation: 'school', idempotencyKey: 'k-1' });
    expect(same).toMatchObject({ id: r.id, duplicate: true });
    await new Promise((res) => setTimeout(res, 200));
    expect(a.received).toHaveLength(1);
  });

  it('a quota warns at its own threshold (warnAt), and a per-second limit makes sends wait without using up attempts', async () => {
    const a = await sink();
    const b = await sink();
    const m = mailer({
      school: [route(a, { quota: { perDay: 10, warnAt: 0.5 } })],
      burst: [route(b, { quota: { perSecond: 2 } })],
    });
    const events: string[] = [];
    m.on('quota-warning', (e) => events.push(`warning ${e.used}/${e.limit} ${e.window}`));
    m.on('quota-exhausted', (e) => events.push(`exhausted ${e.used}/${e.limit}`));
    m.startWorker({ pollInterval: 20, concurrency: 1 });
    for (let i = 0; i < 6; i++) await m.enqueue(mail(`w${i}`), { organisation: 'school' });
    await a.waitFor(6);
    expect(events).toEqual(['warning 5/10 perDay']);

    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await m.enqueue(mail(`b${i}`), { organisation: 'burst' })).id);
    await b.waitFor(5);
    await until(async () => (await Promise.all(ids.map((id) => m.log!.get(id)))).every((r) => r?.status === 'sent'));
    const records = await Promise.all(ids.map((id) => m.log!.get(id)));
    // each went once, with one counted attempt: the waits for the next second are not attempts
    expect(records.map((r) => r!.attempts)).toEqual([1, 1, 1, 1, 1]);
    // at most 2 a second: 5 sent at once span at most two seconds' windows, so some were held
    // back by the limit (a limited attempt, no connection), then sent
    const held = records.filter((r) => r!.history.some((h) => h.kind === 'limited'));
    expect(held.length).toBeGreaterThanOrEqual(1);
    expect(b.received).toHaveLength(5);
  });

  it('logs direct sends too, with secrets in subject and body redacted and content kept only as configured', async () => {
    const a = await sink();
    const m = mailer({ school: [route(a)] }, { logging: { keepContent: 60_000, redact: ['Hunter-Secret-9'] } });
    await m.send(
      mail('reset', {
        subject: 'Your code: 493817',
        text: 'Your password: hunter2. Reset: https://app.example.org/reset?token=abcdef123456 or ask Hunter-Secret-9',
      }),
      { organisation: 'school' },
    );
    expect(a.received[0]!.parsed.text).toContain('hunter2');
    const [rec] = await m.log!.query({ organisation: 'school' });
    expect(rec!.via).toBe('send');
    expect(rec!.status).toBe('sent');
    expect(rec!.subject).toBe('Your code: [redacted]');
    const logged = JSON.stringify(rec);
    for (const secret of ['493817', 'hunter2', 'abcdef123456', 'Hunter-Secret-9']) expect(logged).not.toContain(secret);
    expect(rec!.content?.text).toContain('https://app.example.org/reset?[redacted]');
    // content retention: pruning after keepContent drops it
    await m.log!.prune({ recordsBefore: 0, contentBefore: Date.now() + 1 });
    expect((await m.log!.get(rec!.id))?.content).toBeUndefined();
  });

  it('refuses enqueue without a queue, and an invalid message at the door', async () => {
    const plain = createMailer({ routes: ['capture://'] });
    await expect(plain.enqueue(mail(1))).rejects.toMatchObject({ kind: 'misconfigured', part: 'queue' });
    const a = await sink();
    const m = mailer({ school: [route(a)] });
    await expect(m.enqueue({ ...mail(1), to: 'not an address' }, { organisation: 'school' })).rejects.toMatchObject({
      name: 'MessageValidationError',
    });
    expect(await m.queue!.counts()).toEqual({ waiting: 0, active: 0, sent: 0, dead: 0 });
  });
});
