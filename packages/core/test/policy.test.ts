import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  createMailer,
  DeliveryError,
  type FailureKind,
  failover,
  MailError,
  type MailErrorOptions,
  type Mailer,
  type MailerEvents,
  type MailerOptions,
  MemoryRouteState,
  memoryStores,
  prepareMessage,
  type Transport,
} from '../src/index.js';
import { fakeRoute } from './fixtures/routes.js';
import { mail, sleep, until } from './fixtures/wait.js';

const cleanup: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  vi.useRealTimers();
  vi.restoreAllMocks();
  for (const c of cleanup.splice(0).reverse()) await c();
});

const failure = (kind: FailureKind, extra: Partial<MailErrorOptions> = {}) =>
  new MailError(`${kind}${extra.code ? ` (${extra.code})` : ''}`, { kind, phase: 'response', ...extra });

/** A mailer on in-memory stores whose organisation `school` sends through `routes`. */
function mailer(routes: Transport | Transport[], options: Partial<MailerOptions> = {}): Mailer {
  const m = createMailer({ ...memoryStores(), organisations: () => routes, ...options });
  cleanup.push(() => m.close());
  return m;
}

function collect<E extends 'retrying' | 'dead' | 'unknown'>(m: Mailer, event: E): MailerEvents[E][0][] {
  const seen: MailerEvents[E][0][] = [];
  (m.on as (e: string, f: (p: MailerEvents[E][0]) => void) => unknown)(event, (p) => seen.push(p));
  return seen;
}

const MIN = 60_000;

describe('retryAfter of a transient failure', () => {
  it('a route that failed `unavailable` with retryAfter rests at least that long, and the queued message is not retried before it', async () => {
    const api = fakeRoute('api', () => failure('unavailable', { status: 503, code: 'HTTP 503', retryAfter: 10 * MIN }));
    // the normal back-off (≤ 1 s) and rest (150 ms) are far shorter than what the route said
    const m = mailer(api, { delivery: { backoff: { initial: 1_000, max: 1_000 } }, rest: { unavailable: 150 } });
    const retrying = collect(m, 'retrying');
    const r = await m.enqueue(mail(1), { organisation: 'school' });
    m.startWorker({ pollInterval: 20 });
    await until(() => retrying.length === 1);
    const failedAt = api.times[0]!;
    const e = retrying[0]!;
    expect(e.attempts).toBe(1);
    expect(e.error.kind).toBe('unavailable');
    expect(e.error.retryAfter).toBeGreaterThan(10 * MIN - 1_000);
    expect(e.runAt).toBeGreaterThanOrEqual(failedAt + 10 * MIN);
    expect(e.runAt).toBeLessThan(failedAt + 10 * MIN + 1_000);
    await until(async () => (await m.queue!.get(r.id))?.state === 'waiting');
    expect((await m.queue!.get(r.id))!.runAt).toBe(e.runAt);
    const rec = (await m.log!.get(r.id))!;
    expect(rec).toMatchObject({ status: 'queued', attempts: 1, kind: 'unavailable', nextAttemptAt: e.runAt });
    // the route rests until then too: a direct send skips it without a call
    const [health] = await m.routeHealth('school');
    expect(health!.resting?.kind).toBe('unavailable');
    expect(health!.resting!.until).toBeGreaterThanOrEqual(failedAt + 10 * MIN);
    await expect(m.send(mail('now'), { organisation: 'school' })).rejects.toMatchObject({ kind: 'unavailable' });
    await sleep(200);
    expect(api.calls).toHaveLength(1);
  });

  it('when another failed route gave no retryAfter, the message is retried on the normal back-off', async () => {
    const slow = fakeRoute('slow', () =>
      failure('unavailable', { status: 503, code: 'HTTP 503', retryAfter: 10 * MIN }),
    );
    const plain = fakeRoute('plain', () => failure('unavailable', { code: 'ECONNREFUSED', phase: 'connect' }));
    const m = mailer([slow, plain], { delivery: { backoff: { initial: MIN, max: MIN } } });
    const retrying = collect(m, 'retrying');
    await m.enqueue(mail(2), { organisation: 'school' });
    m.startWorker({ pollInterval: 20 });
    await until(() => retrying.length === 1);
    const failedAt = plain.times[0]!;
    const e = retrying[0]!;
    expect(e.error.retryAfter).toBeUndefined();
    // a random point in the upper half of the first back-off (1 min), not the 10 min one route said
    expect(e.runAt).toBeGreaterThanOrEqual(failedAt + MIN / 2);
    expect(e.runAt).toBeLessThanOrEqual(failedAt + MIN + 1_000);
    const health = await m.routeHealth('school');
    expect(health.map((h) => h.name)).toEqual(['slow', 'plain']);
    expect(health[0]!.resting!.until).toBeGreaterThanOrEqual(slow.times[0]! + 10 * MIN);
    // the route that said nothing rests its configured time (default 30 s)
    expect(health[1]!.resting!.until).toBeLessThan(failedAt + 31_000);
  });

  it('a chain whose every failed route said when carries the earliest retryAfter; a route that said nothing leaves none', async () => {
    const state = new MemoryRouteState();
    const a = fakeRoute('a', () => failure('unavailable', { status: 503, retryAfter: 10 * MIN }));
    const b = fakeRoute('b', () => failure('limited', { status: 429, retryAfter: 2 * MIN }));
    const c = fakeRoute('c', () => failure('unavailable', { status: 503, retryAfter: 5_000 }));
    const msg = prepareMessage(mail('direct'));
    const t = Date.now();
    const err = await failover([a, b, c], { state })
      .send(msg)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DeliveryError);
    expect((err as DeliveryError).kind).toBe('unavailable');
    expect((err as DeliveryError).retryAfter).toBeGreaterThan(5_000 - 500);
    expect((err as DeliveryError).retryAfter).toBeLessThanOrEqual(5_000);
    // each route rests at least what it said; never less than the configured rest (30 s)
    expect(state.get('a')!.until).toBeGreaterThanOrEqual(t + 10 * MIN);
    expect(state.get('b')!.until).toBeGreaterThanOrEqual(t + 2 * MIN);
    expect(state.get('c')!.until).toBeGreaterThanOrEqual(t + 30_000);

    const d = fakeRoute('d', () => failure('unavailable', { status: 503, retryAfter: 10 * MIN }));
    const e = fakeRoute('e', () => failure('unavailable', { code: 'ECONNRESET', phase: 'connect' }));
    const err2 = await failover([d, e])
      .send(msg)
      .catch((x: unknown) => x);
    expect((err2 as DeliveryError).kind).toBe('unavailable');
    expect((err2 as DeliveryError).retryAfter).toBeUndefined();
  });
});

describe("a route held by another send's probe", () => {
  it("the message waits for the probe's lease, uncounted, not a minute", async () => {
    const a = fakeRoute('a');
    const stores = memoryStores();
    const m = createMailer({ ...stores, organisations: () => [a] });
    cleanup.push(() => m.close());
    // the route's rest ended; another send took the probe for the next 2 s
    const now = Date.now();
    await stores.state.rest('school:a', {
      until: now - 1_000,
      kind: 'unavailable',
      reason: 'down',
      probeUntil: now + 2_000,
    });
    const retrying = collect(m, 'retrying');
    await m.enqueue(mail('held'), { organisation: 'school' });
    m.startWorker({ pollInterval: 20 });
    await until(() => retrying.length === 1);
    expect(retrying[0]!.attempts).toBe(0);
    expect(retrying[0]!.runAt).toBeGreaterThanOrEqual(now + 2_000);
    expect(retrying[0]!.runAt).toBeLessThan(now + 3_000);
    expect(a.calls).toHaveLength(0);
  });
});

describe('back-off', () => {
  it('doubles from initial up to max, each delay a random point in the upper half', async () => {
    const api = fakeRoute('api', () => failure('unavailable', { status: 503, code: 'HTTP 503' }));
    const m = mailer(api, {
      delivery: { backoff: { initial: 200, max: 800 }, maxAttempts: 6 },
      rest: { unavailable: 1 },
    });
    const retrying = collect(m, 'retrying');
    const dead = collect(m, 'dead');
    // the random point of each back-off: the lowest, the highest, ...
    const randoms = [0, 0.999_999, 0, 0.999_999, 0.5];
    vi.spyOn(Math, 'random').mockImplementation(() => randoms.shift() ?? 0.5);
    await m.enqueue(mail('backoff'), { organisation: 'school' });
    m.startWorker({ pollInterval: 5 });
    await until(() => dead.length === 1);
    expect(retrying.map((e) => e.attempts)).toEqual([1, 2, 3, 4, 5]);
    expect(api.calls).toHaveLength(6);
    const delays = retrying.map((e, i) => e.runAt - api.times[i]!);
    // bases 200, 400, 800 (capped), 800, 800: half the base at random 0, the base at random 1
    const expected = [100, 400, 400, 800, 600];
    for (const [i, d] of delays.entries()) {
      expect(d, `delay ${i + 1}: ${delays.join(', ')}`).toBeGreaterThanOrEqual(expected[i]!);
      // (a loaded machine only adds to a delay measured from the route's call)
      expect(d, `delay ${i + 1}: ${delays.join(', ')}`).toBeLessThan(expected[i]! + 150);
      // never tried before its time
      expect(api.times[i + 1]).toBeGreaterThanOrEqual(retrying[i]!.runAt);
    }
  });
});

describe('limited everywhere', () => {
  it('waits for the earliest reset of all the limited routes, without using up an attempt', async () => {
    const a = fakeRoute('a', () => failure('limited', { status: 429, code: 'HTTP 429', retryAfter: 5 * MIN }));
    const b = fakeRoute('b', () => failure('limited', { status: 429, code: 'HTTP 429', retryAfter: 2 * MIN }));
    const c = fakeRoute('c', () => failure('limited', { status: 429, code: 'HTTP 429', retryAfter: 4 * MIN }));
    // one attempt only: a counted failure would be dead at once
    const m = mailer([a, b, c], { delivery: { maxAttempts: 1 } });
    const retrying = collect(m, 'retrying');
    const dead = collect(m, 'dead');
    const r = await m.enqueue(mail('limited'), { organisation: 'school' });
    m.startWorker({ pollInterval: 20 });
    await until(() => retrying.length === 1);
    const e = retrying[0]!;
    expect(e.attempts).toBe(0);
    expect(e.error.kind).toBe('limited');
    expect(e.runAt).toBeGreaterThanOrEqual(b.times[0]! + 2 * MIN);
    expect(e.runAt).toBeLessThan(b.times[0]! + 2 * MIN + 1_000);
    await until(async () => (await m.queue!.get(r.id))?.state === 'waiting');
    expect(await m.queue!.get(r.id)).toMatchObject({ state: 'waiting', attempts: 0, runAt: e.runAt });
    expect(await m.log!.get(r.id)).toMatchObject({
      status: 'queued',
      attempts: 0,
      kind: 'limited',
      nextAttemptAt: e.runAt,
    });
    expect(dead).toHaveLength(0);
    expect([a, b, c].map((x) => x.calls.length)).toEqual([1, 1, 1]);
  });
});

describe('delivery policies', () => {
  it("unknown: 'dead' stops an unknown outcome for a person to check, instead of retrying it", async () => {
    const cut = () => failure('unknown', { phase: 'data-sent', code: 'ECONNRESET' });
    const api = fakeRoute('api', (n) => (n === 0 ? cut() : undefined));
    const m = mailer(api, { delivery: { unknown: 'dead', backoff: { initial: 20, max: 20 } } });
    const dead = collect(m, 'dead');
    const unknown = collect(m, 'unknown');
    const r = await m.enqueue(mail('maybe'), { organisation: 'school' });
    m.startWorker({ pollInterval: 20 });
    await until(() => dead.length === 1);
    expect(dead[0]!.reason).toBe('the outcome on api is unknown; not retried (policy)');
    expect(unknown.map((u) => u.route)).toEqual(['api']);
    expect(await m.log!.get(r.id)).toMatchObject({ status: 'dead', unknown: true, attempts: 1, kind: 'unknown' });
    await until(async () => (await m.queue!.get(r.id))?.state === 'dead');
    await sleep(150);
    expect(api.calls).toHaveLength(1);

    // the default retries it on the same route
    const api2 = fakeRoute('api', (n) => (n === 0 ? cut() : undefined));
    const m2 = mailer(api2, { delivery: { backoff: { initial: 20, max: 20 } } });
    const r2 = await m2.enqueue(mail('maybe'), { organisation: 'school' });
    m2.startWorker({ pollInterval: 20 });
    await until(async () => (await m2.log!.get(r2.id))?.status === 'sent');
    expect(api2.calls).toHaveLength(2);
  });

  it('maxAttempts: dead once the counted attempts are used up, with the last failure as the reason', async () => {
    const api = fakeRoute('api', () => failure('unavailable', { status: 503, code: 'HTTP 503' }));
    const m = mailer(api, {
      delivery: { maxAttempts: 3, backoff: { initial: 20, max: 20 } },
      rest: { unavailable: 1 },
    });
    const retrying = collect(m, 'retrying');
    const dead = collect(m, 'dead');
    const r = await m.enqueue(mail('give up'), { organisation: 'school' });
    m.startWorker({ pollInterval: 5 });
    await until(() => dead.length === 1);
    expect(dead[0]!.reason).toBe('gave up after 3 attempts: api: unavailable (HTTP 503)');
    expect(retrying.map((e) => e.attempts)).toEqual([1, 2]);
    const rec = (await m.log!.get(r.id))!;
    expect(rec).toMatchObject({ status: 'dead', attempts: 3, kind: 'unavailable' });
    expect(rec.history.map((h) => [h.status, h.code])).toEqual(Array(3).fill(['failed', 'HTTP 503']));
    await until(async () => (await m.queue!.get(r.id))?.state === 'dead');
    await sleep(150);
    expect(api.calls).toHaveLength(3);
  });

  it('limitedWait: how long a message waits when a limited route did not say for how long', async () => {
    const api = fakeRoute('api', () => failure('limited', { status: 429, code: 'HTTP 429' }));
    const m = mailer(api, { delivery: { limitedWait: 7_000 } });
    const retrying = collect(m, 'retrying');
    const r = await m.enqueue(mail('wait'), { organisation: 'school' });
    m.startWorker({ pollInterval: 20 });
    await until(() => retrying.length === 1);
    const e = retrying[0]!;
    expect(e.error.retryAfter).toBeUndefined();
    expect(e.attempts).toBe(0);
    expect(e.runAt).toBeGreaterThanOrEqual(api.times[0]! + 7_000);
    expect(e.runAt).toBeLessThan(api.times[0]! + 7_000 + 500);
    expect(await m.log!.get(r.id)).toMatchObject({ status: 'queued', attempts: 0, kind: 'limited' });
  });

  it('suppressRefused: false leaves a permanently refused recipient off the suppression list', async () => {
    const refuse = () =>
      fakeRoute('api', () =>
        failure('refused', {
          phase: 'envelope',
          status: 550,
          code: '550 5.1.1',
          recipients: ['parent@example.org'],
        }),
      );
    const m = mailer(refuse(), { delivery: { suppressRefused: false } });
    const dead = collect(m, 'dead');
    const r = await m.enqueue(mail('refused'), { organisation: 'school' });
    m.startWorker({ pollInterval: 20 });
    await until(() => dead.length === 1);
    expect(await m.log!.get(r.id)).toMatchObject({ status: 'dead', kind: 'refused', code: '550 5.1.1' });
    expect(dead[0]!.reason).toMatch(/^refused: /);
    expect(await m.suppression!.has('school', 'parent@example.org')).toBeUndefined();
    expect(await m.suppression!.list('school')).toEqual([]);

    // the default does add it
    const m2 = mailer(refuse());
    const dead2 = collect(m2, 'dead');
    const r2 = await m2.enqueue(mail('refused'), { organisation: 'school' });
    m2.startWorker({ pollInterval: 20 });
    await until(() => dead2.length === 1);
    expect(await m2.suppression!.has('school', 'parent@example.org')).toMatchObject({
      source: 'refused',
      code: '550 5.1.1',
      deliveryId: r2.id,
    });
  });
});

describe('delivery log retention', () => {
  it("mailer.pruneLog drops content after keepContent and records after retention, per the mailer's settings", async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const t0 = Date.UTC(2030, 0, 1);
    vi.setSystemTime(t0);
    const HOUR = 3_600_000;
    const DAY = 24 * HOUR;
    const m = mailer(fakeRoute('api'), { logging: { keepContent: HOUR, retention: DAY } });
    const sent = await m.send(mail('kept', { text: 'hello there' }), { organisation: 'school' });
    const queued = await m.enqueue(mail('waiting'), { organisation: 'school' });
    const [rec] = await m.log!.query({ status: 'sent' });
    expect(rec!.messageId).toBe(sent.messageId);
    expect(rec!.content?.text).toBe('hello there');

    vi.setSystemTime(t0 + HOUR - 1_000);
    expect(await m.pruneLog()).toBe(0);
    expect((await m.log!.get(rec!.id))?.content?.text).toBe('hello there');

    vi.setSystemTime(t0 + HOUR + 1_000);
    expect(await m.pruneLog()).toBe(0);
    const later = await m.log!.get(rec!.id);
    expect(later?.status).toBe('sent');
    expect(later?.content).toBeUndefined();

    vi.setSystemTime(t0 + DAY - 1_000);
    expect(await m.pruneLog()).toBe(0);
    expect(await m.log!.get(rec!.id)).toBeDefined();

    vi.setSystemTime(t0 + DAY + 1_000);
    expect(await m.pruneLog()).toBe(1);
    expect(await m.log!.get(rec!.id)).toBeUndefined();
    // a message still waiting in the queue keeps its record
    expect((await m.log!.get(queued.id))?.status).toBe('queued');
  });

  it('by default keeps no content in the log, and records for 30 days', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const t0 = Date.UTC(2030, 0, 1);
    vi.setSystemTime(t0);
    const DAY = 86_400_000;
    const m = mailer(fakeRoute('api'));
    await m.send(mail('plain', { text: 'secret-free but private' }), { organisation: 'school' });
    const [rec] = await m.log!.query({});
    expect(rec!.status).toBe('sent');
    expect(rec!.content).toBeUndefined();
    expect(JSON.stringify(await m.log!.get(rec!.id))).not.toContain('private');

    vi.setSystemTime(t0 + 30 * DAY - 1_000);
    expect(await m.pruneLog()).toBe(0);
    expect(await m.log!.get(rec!.id)).toBeDefined();
    vi.setSystemTime(t0 + 30 * DAY + 1_000);
    expect(await m.pruneLog()).toBe(1);
    expect(await m.log!.get(rec!.id)).toBeUndefined();
  });
});
