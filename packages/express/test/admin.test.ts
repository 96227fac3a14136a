import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createMailer,
  type Mailer,
  type MailerStores,
  memoryStores,
  type RouteConfig,
  sqliteStores,
} from '@mailvia/core';
import { refusedPort, type SmtpSink, startSmtpSink } from '@mailvia/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mailviaAdmin } from '../src/index.js';
import { EXPRESS_VERSIONS, json, type Served, serve } from './helpers.js';

const USERS = { 'school-a': 'fake-password-aaaa', 'school-b': 'fake-password-bbbb' };

async function until<T>(fn: () => Promise<T | undefined> | T | undefined, what: string, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

it('cannot be created without authorize (no open default)', () => {
  const mailer = createMailer({ mode: 'development' });
  expect(() => mailviaAdmin({ mailer } as never)).toThrow(/authorize/);
});

const dir = mkdtempSync(join(tmpdir(), 'mailvia-admin-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
// Each Express major against the in-memory stores and the embedded durable ones (SQLite).
const CASES = EXPRESS_VERSIONS.flatMap((v) => [
  { ...v, storeName: 'memory', stores: (): MailerStores => memoryStores() },
  {
    ...v,
    storeName: 'sqlite',
    stores: (): MailerStores => sqliteStores({ path: join(dir, `admin-${v.major}.db`) }),
  },
]);

describe.each(CASES)('mailviaAdmin() on $name with $storeName stores', ({ express, stores: makeStores }) => {
  let sink: SmtpSink;
  let mailer: Mailer;
  let server: Served;
  let worker: { stop(): Promise<void> };
  let refuseGone = true;
  const stores = makeStores();

  beforeAll(async () => {
    sink = await startSmtpSink({
      users: USERS,
      behaviour: (stage, { address }) =>
        stage === 'rcpt' && refuseGone && address === 'gone@example.org'
          ? { code: 550, message: '5.1.1 No such user here' }
          : undefined,
    });
    const dead = await refusedPort();
    const smtpRoute = (name: string, port: number, user: keyof typeof USERS): RouteConfig => ({
      type: 'smtp',
      name,
      host: '127.0.0.1',
      port,
      auth: { user, pass: USERS[user] },
      tls: { ca: sink.ca },
    });
    mailer = createMailer({
      organisations: (id) => {
        if (id === 'school-a')
          return [smtpRoute('relay-down', dead, 'school-a'), smtpRoute('school-a-smtp', sink.port, 'school-a')];
        if (id === 'school-b')
          return [{ ...smtpRoute('school-b-smtp', sink.port, 'school-b'), quota: { perDay: 5, warnAt: 0.4 } }];
        if (id === 'school-q') return [{ ...smtpRoute('school-q-smtp', sink.port, 'school-a'), quota: { perDay: 5 } }];
        if (id === 'school-down') return [smtpRoute('only-down', dead, 'school-a')];
        return undefined;
      },
      ...stores,
    });
    worker = mailer.startWorker({ pollInterval: 25 });
    const app = express();
    app.use(
      '/admin',
      mailviaAdmin({
        mailer,
        // The app's own guard: here, a header naming the organisation the caller administers.
        authorize: (req, { organisation }) => req.get('x-admin-of') === organisation,
      }),
    );
    // The same, where the application can rebuild the message of a failed direct send.
    app.use(
      '/admin2',
      mailviaAdmin({
        mailer,
        authorize: (req, { organisation }) => req.get('x-admin-of') === organisation,
        resendMessage: (delivery) =>
          delivery.subject === 'Rebuildable'
            ? { from: delivery.from, to: 'head@school-a.example', subject: 'Rebuildable (again)', text: 'Again.' }
            : undefined,
      }),
    );
    server = await serve(app);
  });
  afterAll(async () => {
    await worker?.stop();
    await server?.close();
    await mailer?.close();
    await sink?.close();
  });

  const call = (org: string, path: string, init: RequestInit & { as?: string } = {}) =>
    fetch(`${server.url}/admin/organisations/${org}/${path}`, {
      ...init,
      headers: { 'content-type': 'application/json', 'x-admin-of': init.as ?? org, ...(init.headers ?? {}) },
    });

  it('refuses a caller that authorize() refuses, with a stable code and a help link', async () => {
    const res = await call('school-a', 'health', { as: 'school-b' });
    expect(res.status).toBe(403);
    const { error } = await json(res);
    expect(error.code).toBe('forbidden');
    expect(error.help).toMatch(/^https:\/\/.*#error-codes$/);
    const none = await fetch(`${server.url}/admin/organisations/school-a/deliveries`);
    expect(none.status).toBe(403);
  });

  it('verifies each route of the chain and shows the resting state after a failure', async () => {
    const before = await json(await call('school-a', 'health'));
    expect(before.routes.map((r: { name: string; status: string }) => `${r.name}:${r.status}`)).toEqual([
      'relay-down:failing',
      'school-a-smtp:ok',
    ]);
    expect(before.routes[0].verify).toMatchObject({ ok: false, kind: 'unavailable' });
    expect(before.ok).toBe(true);
    expect(JSON.stringify(before)).not.toContain(USERS['school-a']);

    // A send falls over from the dead relay, which then rests.
    const sent = await call('school-a', 'test-send', {
      method: 'POST',
      body: JSON.stringify({ from: 'office@school-a.example', to: 'head@school-a.example' }),
    });
    expect(sent.status, await sent.clone().text()).toBe(200);
    const { receipt } = await json(sent);
    expect(receipt.route).toBe('school-a-smtp');
    expect(receipt.attempts.map((a: { route: string; ok: boolean }) => `${a.route}:${a.ok}`)).toEqual([
      'relay-down:false',
      'school-a-smtp:true',
    ]);

    const after = await json(await call('school-a', 'health?verify=false'));
    expect(after.routes[0]).toMatchObject({ name: 'relay-down', status: 'resting', lastErrorKind: 'unavailable' });
    expect(after.routes[0].resting.kind).toBe('unavailable');
    expect(Date.parse(after.routes[0].resting.until)).toBeGreaterThan(Date.now());
    expect(after.routes[1]).toMatchObject({ name: 'school-a-smtp', status: 'unchecked' });

    const unknown = await call('school-z', 'health');
    expect(unknown.status).toBe(404);
    expect((await json(unknown)).error.code).toBe('unknown_organisation');
  });

  it("test-sends with the organisation's own account, and says what is missing", async () => {
    const n = sink.received.length;
    const res = await call('school-b', 'test-send', {
      method: 'POST',
      body: JSON.stringify({ from: 'office@school-b.example', to: 'it@school-b.example', subject: 'Does mail work?' }),
    });
    expect(res.status).toBe(200);
    const [mail] = (await sink.waitFor(n + 1)).slice(n);
    expect(mail).toMatchObject({ user: 'school-b', to: ['it@school-b.example'] });
    expect(mail!.parsed.subject).toBe('Does mail work?');
    const noFrom = await call('school-b', 'test-send', {
      method: 'POST',
      body: JSON.stringify({ to: 'x@example.org' }),
    });
    expect(noFrom.status).toBe(400);
    expect((await json(noFrom)).error).toMatchObject({ code: 'bad_request', message: expect.stringMatching(/from/) });
    const bad = await call('school-b', 'test-send', {
      method: 'POST',
      body: JSON.stringify({ from: 'office@school-b.example', to: 'not an address' }),
    });
    expect(bad.status).toBe(422);
    expect((await json(bad)).error.code).toBe('invalid_message');
  });

  it("shows a route's quota used, left and reset, live from the route state store, then exhausted", async () => {
    const health = async () => json(await call('school-q', 'health?verify=false'));
    const fresh = await health();
    expect(fresh.routes[0]).toMatchObject({ name: 'school-q-smtp', status: 'unchecked' });
    expect(fresh.routes[0].quota).toEqual([
      {
        window: 'perDay',
        limit: 5,
        used: 0,
        left: 5,
        resetAt: new Date(Math.floor(Date.now() / 86_400_000) * 86_400_000 + 86_400_000).toISOString(),
        exhausted: false,
      },
    ]);
    const sendOne = () =>
      call('school-q', 'test-send', {
        method: 'POST',
        body: JSON.stringify({ from: 'office@school-q.example', to: 'it@school-q.example' }),
      });
    const n = sink.received.length;
    for (let i = 0; i < 3; i++) expect((await sendOne()).status).toBe(200);
    await sink.waitFor(n + 3);
    const three = await health();
    expect(three.routes[0].quota[0]).toMatchObject({ used: 3, left: 2, exhausted: false });
    // the same numbers as the mailer's own reading
    const [live] = await mailer.routeHealth('school-q');
    expect(live!.quota![0]).toMatchObject({ used: 3, left: 2 });

    for (let i = 0; i < 2; i++) expect((await sendOne()).status).toBe(200);
    const full = await health();
    expect(full.routes[0]).toMatchObject({ status: 'exhausted' });
    expect(full.routes[0].quota[0]).toMatchObject({ used: 5, left: 0, exhausted: true });
    expect(full.ok).toBe(false);
    // a sixth is refused without a connection; the count stays at the limit
    const sixth = await sendOne();
    expect(sixth.status).toBe(502);
    expect((await json(sixth)).error.message).toMatch(/quota of 5 per day/);
    expect(sink.received.length).toBe(n + 5);
    const after = await health();
    expect(after.routes[0]).toMatchObject({ status: 'exhausted', lastErrorKind: 'limited' });
    expect(after.routes[0].resting.kind).toBe('limited');
    expect(after.routes[0].quota[0]).toMatchObject({ used: 5, left: 0 });
  });

  it('lists deliveries with their attempts, filtered by status, time and recipient', async () => {
    const all = await json(await call('school-a', 'deliveries'));
    const test = all.deliveries.find((d: { recipients: string[] }) => d.recipients.includes('head@school-a.example'));
    expect(test).toMatchObject({ status: 'sent', organisation: 'school-a', route: 'school-a-smtp' });
    expect(test.attempts.map((a: { route: string; status: string }) => `${a.route}:${a.status}`)).toEqual([
      'relay-down:failed',
      'school-a-smtp:ok',
    ]);
    const byRcpt = await json(await call('school-a', 'deliveries?recipient=HEAD@school-a.example&status=sent'));
    expect(byRcpt.deliveries.map((d: { id: string }) => d.id)).toEqual([test.id]);
    expect((await json(await call('school-a', 'deliveries?status=dead'))).deliveries).toEqual([]);
    const future = new Date(Date.now() + 60_000).toISOString();
    expect((await json(await call('school-a', `deliveries?since=${future}`))).deliveries).toEqual([]);
    // school-b's deliveries are not school-a's.
    const bDeliveries = (await json(await call('school-b', 'deliveries'))).deliveries;
    expect(new Set(bDeliveries.map((d: { organisation: string }) => d.organisation))).toEqual(new Set(['school-b']));
    expect((await call('school-b', `deliveries/${test.id}`)).status).toBe(404);
    const badStatus = await call('school-a', 'deliveries?status=bounced');
    expect(badStatus.status).toBe(400);
  });

  it('shows a refused recipient on the suppression list, removes it, and resends the dead delivery', async () => {
    const { id } = await mailer.enqueue(
      { from: 'office@school-a.example', to: 'gone@example.org', subject: 'Report card', text: 'Attached.' },
      { organisation: 'school-a' },
    );
    const dead = await until(async () => {
      const d = await json(await call('school-a', `deliveries/${id}`));
      return d.status === 'dead' ? d : undefined;
    }, 'the delivery to die');
    expect(dead.kind).toBe('refused');
    const list = await json(await call('school-a', 'suppressions'));
    expect(list.suppressions.map((s: { address: string }) => s.address)).toContain('gone@example.org');
    expect((await json(await call('school-b', 'suppressions'))).suppressions).toEqual([]);

    // The recipient's mailbox is back: clear it and resend.
    refuseGone = false;
    const removed = await call('school-a', 'suppressions/gone@example.org', { method: 'DELETE' });
    expect(removed.status).toBe(200);
    expect((await call('school-a', 'suppressions/gone@example.org', { method: 'DELETE' })).status).toBe(404);
    const n = sink.received.length;
    const resent = await call('school-a', `deliveries/${id}/resend`, { method: 'POST' });
    expect(resent.status, await resent.clone().text()).toBe(202);
    const [mail] = (await sink.waitFor(n + 1)).slice(n);
    expect(mail!.to).toEqual(['gone@example.org']);
    expect(mail!.parsed.messageId).toBe(dead.messageId);
    await until(async () => (await json(await call('school-a', `deliveries/${id}`))).status === 'sent', 'sent');

    const again = await call('school-a', `deliveries/${id}/resend`, { method: 'POST' });
    expect(again.status).toBe(409);
    expect((await json(again)).error.code).toBe('conflict');
    expect((await call('school-b', `deliveries/${id}/resend`, { method: 'POST', as: 'school-b' })).status).toBe(404);
  });

  it('says precisely why a failed direct send cannot be resent, and resends it when the app rebuilds it', async () => {
    const failedSend = async (org: string, subject: string) => {
      await expect(
        mailer.send(
          { from: 'office@school-a.example', to: 'head@school-a.example', subject, text: '…' },
          { organisation: org },
        ),
      ).rejects.toMatchObject({ kind: 'unavailable' });
      const [d] = await mailer.log!.query({ organisation: org, status: 'failed' });
      expect(d).toMatchObject({ subject, via: 'send' });
      return d!.id;
    };
    const plain = await failedSend('school-down', 'Not rebuildable');
    const res = await call('school-down', `deliveries/${plain}/resend`, { method: 'POST' });
    expect(res.status).toBe(409);
    const { error } = await json(res);
    expect(error).toMatchObject({ code: 'resend_unavailable', details: { reason: 'message_not_stored' } });
    expect(error.message).toMatch(/direct send.*not stored/);
    const viaApp = await fetch(`${server.url}/admin2/organisations/school-down/deliveries/${plain}/resend`, {
      method: 'POST',
      headers: { 'x-admin-of': 'school-down' },
    });
    expect(viaApp.status).toBe(409);
    expect((await json(viaApp)).error.details.reason).toBe('message_not_rebuilt');

    // The app rebuilds this one: it goes to the queue once, however often the button is pressed.
    const rebuildable = await failedSend('school-down', 'Rebuildable');
    const resend = () =>
      fetch(`${server.url}/admin2/organisations/school-down/deliveries/${rebuildable}/resend`, {
        method: 'POST',
        headers: { 'x-admin-of': 'school-down' },
      });
    const first = await resend();
    expect(first.status, await first.clone().text()).toBe(202);
    const { result } = await json(first);
    expect(result).toMatchObject({ duplicate: false, id: expect.any(String) });
    expect(result.id).not.toBe(rebuildable);
    expect((await json(await resend())).result).toMatchObject({ duplicate: true, id: result.id });
    const queued = await json(await call('school-down', `deliveries/${result.id}`));
    expect(queued).toMatchObject({
      via: 'queue',
      subject: 'Rebuildable (again)',
      idempotencyKey: `mailvia-resend:${rebuildable}`,
    });
  });

  it('adds an address by hand, and answers unknown endpoints and methods in JSON', async () => {
    const add = await call('school-b', 'suppressions', {
      method: 'POST',
      body: JSON.stringify({ address: 'Opted.Out@example.org', reason: 'asked by phone' }),
    });
    expect(add.status).toBe(201);
    const list = await json(await call('school-b', 'suppressions'));
    expect(list.suppressions[0]).toMatchObject({
      address: 'opted.out@example.org',
      source: 'manual',
      reason: 'asked by phone',
    });
    const wrong = await call('school-b', 'health', { method: 'DELETE' });
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get('allow')).toBe('GET');
    const missing = await call('school-b', 'nothing-here');
    expect(missing.status).toBe(404);
    expect((await json(missing)).error.code).toBe('not_found');
  });
});

it('says which store is missing when the mailer has none', async () => {
  const { default: express } = await import('express');
  const mailer = createMailer({ mode: 'development' });
  const app = express();
  app.use('/admin', mailviaAdmin({ mailer, authorize: () => true }));
  const s = await serve(app);
  try {
    const res = await fetch(`${s.url}/admin/organisations/a/deliveries`);
    expect(res.status).toBe(501);
    const { error } = await json(res);
    expect(error.code).toBe('not_supported');
    expect(error.message).toMatch(/delivery log/);
  } finally {
    await s.close();
    await mailer.close();
  }
});
