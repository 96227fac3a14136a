// Unknown outcomes of queued mail: the retry is pinned to the route where the outcome is unknown
// (never sent elsewhere automatically), and the in-flight attempt is in the log before the call.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  createMailer,
  type DeliveryLog,
  MailError,
  type Mailer,
  type MailerEvents,
  type MailerOptions,
  memoryStores,
  type PreparedMessage,
  sqliteStores,
} from '../src/index.js';
import { fakeRoute } from './fixtures/routes.js';
import { mail, sleep, until } from './fixtures/wait.js';

const dir = mkdtempSync(join(tmpdir(), 'mailvia-unknown-'));
const cleanup: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Stores = ReturnType<typeof memoryStores> | ReturnType<typeof sqliteStores>;
let dbs = 0;
const STORES: [string, () => Stores][] = [
  ['memory', () => memoryStores()],
  ['sqlite', () => sqliteStores({ path: join(dir, `u${dbs++}.db`) })],
];

const unknownError = (route: string) =>
  new MailError(`${route}: the connection closed after the message was sent, before the answer`, {
    kind: 'unknown',
    phase: 'data-sent',
    route,
    code: 'ECONNRESET',
  });
const unavailableError = (route: string) =>
  new MailError(`${route}: 421 4.3.2 Service not available`, {
    kind: 'unavailable',
    phase: 'connect',
    route,
    code: '421',
    status: 421,
  });

function mailer(stores: Stores, routes: unknown, options: Partial<MailerOptions> = {}): Mailer {
  const m = createMailer({
    ...stores,
    organisations: () => routes as never,
    delivery: { backoff: { initial: 200, max: 200 } },
    rest: { unavailable: 20 },
    ...options,
  });
  cleanup.push(() => m.close());
  return m;
}

describe.each(STORES)('the retry of an unknown outcome is pinned to its route (%s stores)', (_kind, makeStores) => {
  it('failover [a, b]: a is down once, b answers unknown; the retry goes to b only, though a (first) is back', async () => {
    const a = fakeRoute('a', (n) => (n === 0 ? unavailableError('a') : undefined));
    const b = fakeRoute('b', (n) => (n === 0 ? unknownError('b') : undefined));
    const m = mailer(makeStores(), [a, b]);
    const unknown: MailerEvents['unknown'][0][] = [];
    m.on('unknown', (e) => unknown.push(e));
    const r = await m.enqueue(mail('failover'), { organisation: 'school' });
    m.startWorker({ pollInterval: 10 });
    await until(async () => (await m.log!.get(r.id))?.status === 'sent');
    // a rested 20 ms; the retry came ~100-200 ms later: unpinned, it would have gone to a
    expect(a.calls).toEqual([r.messageId]);
    expect(b.calls).toEqual([r.messageId, r.messageId]);
    const rec = (await m.log!.get(r.id))!;
    expect(rec).toMatchObject({ status: 'sent', route: 'b', unknown: true, attempts: 2 });
    expect(rec.history.map((h) => [h.route, h.status])).toEqual([
      ['a', 'failed'],
      ['b', 'unknown'],
      ['b', 'ok'],
    ]);
    expect(unknown.map((e) => [e.id, e.route, e.messageId])).toEqual([[r.id, 'b', r.messageId]]);
  });

  it('roundRobin [a, b]: a answers unknown; the retry goes to a again, not to b (the next in turn)', async () => {
    const a = fakeRoute('a', (n) => (n === 0 ? unknownError('a') : undefined));
    const b = fakeRoute('b');
    const m = mailer(makeStores(), { type: 'roundrobin', routes: [a, b] });
    const r = await m.enqueue(mail('round'), { organisation: 'school' });
    m.startWorker({ pollInterval: 10, concurrency: 1 });
    await until(async () => (await m.log!.get(r.id))?.status === 'sent');
    expect(a.calls).toEqual([r.messageId, r.messageId]);
    expect(b.calls).toEqual([]);
    const rec = (await m.log!.get(r.id))!;
    expect(rec).toMatchObject({ status: 'sent', route: 'a', unknown: true });
    expect(rec.history.map((h) => [h.route, h.status])).toEqual([
      ['a', 'unknown'],
      ['a', 'ok'],
    ]);
    // the rotation itself still works: the next mail starts with b
    const next = await m.enqueue(mail('round-2'), { organisation: 'school' });
    await until(async () => (await m.log!.get(next.id))?.status === 'sent');
    expect(b.calls).toEqual([next.messageId]);
  });

  it('failover [a, b]: a answers unknown and then rests; the retry waits for a (uncounted) instead of using b', async () => {
    const stores = makeStores();
    let restUntil = 0;
    const a = fakeRoute('a', async (n) => {
      if (n > 0) return undefined;
      // another worker found a down meanwhile: it rests past the retry's back-off
      restUntil = Date.now() + 600;
      await stores.state.rest('school:a', { until: restUntil, kind: 'unavailable', reason: 'down (test)' });
      return unknownError('a');
    });
    const b = fakeRoute('b');
    const m = mailer(stores, [a, b]);
    const r = await m.enqueue(mail('resting'), { organisation: 'school' });
    m.startWorker({ pollInterval: 10 });
    await until(async () => (await m.log!.get(r.id))?.status === 'sent');
    expect(b.calls).toEqual([]);
    expect(a.calls).toEqual([r.messageId, r.messageId]);
    const rec = (await m.log!.get(r.id))!;
    expect(rec).toMatchObject({ status: 'sent', route: 'a', unknown: true, attempts: 2 });
    const history = rec.history.map((h) => [h.route, h.status]);
    expect(history[0]).toEqual(['a', 'unknown']);
    expect(history.at(-1)).toEqual(['a', 'ok']);
    expect(history.slice(1, -1).every(([route, status]) => route === 'a' && status === 'skipped')).toBe(true);
    expect(history.length).toBeGreaterThan(2);
    expect(rec.sentAt!).toBeGreaterThanOrEqual(restUntil);
  });

  it('a worker died during a call on b (the second route): the next take flags it unknown and sends on b only, same Message-ID', async () => {
    const stores = makeStores();
    const a = fakeRoute('a');
    const b = fakeRoute('b');
    const m = mailer(stores, [a, b]);
    const unknown: MailerEvents['unknown'][0][] = [];
    m.on('unknown', (e) => unknown.push(e));
    const r = await m.enqueue(mail('crash'), { organisation: 'school' });

    // the dead worker: takes the job, writes its attempt on b as in flight, calls b, and dies
    // before it hears back (its handler never returns an outcome: the job comes back after the lease)
    let died = false;
    const dead = stores.queue.process(
      async (job) => {
        // (should it take the job again before it is stopped, it does nothing with it)
        if (died) throw new Error('the worker is dead');
        await stores.log.putAttempt({
          id: randomUUID(),
          deliveryId: job.id,
          organisation: 'school',
          route: 'b',
          status: 'in-flight',
          startedAt: Date.now(),
        });
        await b.send(job.message);
        died = true;
        throw new Error('the worker died');
      },
      { lease: 100, pollInterval: 10 },
    );
    await until(() => died);
    await dead.stop();
    expect((await m.log!.get(r.id))?.status).toBe('sending');

    m.startWorker({ pollInterval: 10, lease: 5_000 });
    await until(async () => (await m.log!.get(r.id))?.status === 'sent');
    expect(a.calls).toEqual([]);
    expect(b.calls).toEqual([r.messageId, r.messageId]);
    const rec = (await m.log!.get(r.id))!;
    expect(rec).toMatchObject({ status: 'sent', route: 'b', unknown: true, attempts: 2 });
    expect(rec.history.map((h) => [h.route, h.status])).toEqual([
      ['b', 'unknown'],
      ['b', 'ok'],
    ]);
    expect(rec.history[0]!.error).toMatch(/worker stopped/);
    expect(unknown.map((e) => [e.id, e.route, e.messageId])).toEqual([[r.id, 'b', r.messageId]]);
    expect((await m.log!.query({ unknown: true })).map((x) => x.id)).toEqual([r.id]);
  });
});

/** A log whose `putAttempt` takes `ms` before it stores anything (a slow disk or network). */
function slowLog(inner: DeliveryLog, ms: number): DeliveryLog {
  return new Proxy(inner, {
    get(target, prop) {
      if (prop === 'putAttempt')
        return async (...args: Parameters<DeliveryLog['putAttempt']>) => {
          await sleep(ms);
          return target.putAttempt(...args);
        };
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

describe.each(STORES)(
  'the in-flight attempt is in the log before the network call (%s stores)',
  (_kind, makeStores) => {
    it('with a putAttempt that takes 50 ms, every route finds its attempt in flight in the log when it is called', async () => {
      const stores = makeStores();
      const log = stores.log;
      /** [route, found] for each call: whether the route's attempt was in the log, in flight, at the call. */
      const seen: [string, boolean][] = [];
      const check = (route: string) => async (_n: number, message: PreparedMessage) => {
        const [rec] = await log.query({ messageId: message.messageId });
        const details = rec ? await log.get(rec.id) : undefined;
        seen.push([route, details?.history.some((h) => h.route === route && h.status === 'in-flight') ?? false]);
        return undefined;
      };
      // a is down (each send probes it after a 1 ms rest, then falls over to b); b answers unknown
      // on its second call, so a pinned retry is called too
      const checkA = check('a');
      const a = fakeRoute('a', async (n, message) => {
        await checkA(n, message);
        return unavailableError('a');
      });
      const checkB = check('b');
      const b = fakeRoute('b', async (n, message) => {
        await checkB(n, message);
        return n === 1 ? unknownError('b') : undefined;
      });
      const m = mailer({ ...stores, log: slowLog(log, 50) } as Stores, [a, b], { rest: { unavailable: 1 } });

      // a direct send
      await m.send(mail('direct'), { organisation: 'school' });
      const queued: { id: string }[] = [];
      for (let i = 0; i < 4; i++) queued.push(await m.enqueue(mail(`queued ${i}`), { organisation: 'school' }));
      m.startWorker({ pollInterval: 10, concurrency: 2 });
      await until(async () =>
        (await Promise.all(queued.map((q) => m.log!.get(q.id)))).every((r) => r?.status === 'sent'),
      );
      // b: the direct send, four queued mails and the pinned retry of the unknown one
      expect(a.calls.length).toBeGreaterThanOrEqual(1);
      expect(b.calls).toHaveLength(6);
      expect(seen).toHaveLength(a.calls.length + b.calls.length);
      expect(seen.filter(([, found]) => !found)).toEqual([]);
      expect((await m.log!.query({ unknown: true })).length).toBe(1);
    });
  },
);
