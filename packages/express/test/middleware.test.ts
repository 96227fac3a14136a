import { createMailer, MailError, type Mailer, memoryStores, type RouteConfig } from '@mailvia/core';
import { refusedPort, type SmtpSink, startSmtpSink } from '@mailvia/core/testing';
import type { NextFunction, Request, Response } from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mailvia, mailviaErrorHandler } from '../src/index.js';
import { EXPRESS_VERSIONS, json, type Served, serve } from './helpers.js';

const USERS = {
  'school-a': 'fake-password-aaaa',
  'school-b': 'fake-password-bbbb',
  'platform-default': 'fake-password-dddd',
};

describe.each(EXPRESS_VERSIONS)('mailvia() on $name', ({ express }) => {
  let sink: SmtpSink;
  let mailer: Mailer;
  let server: Served;
  let worker: { stop(): Promise<void> };

  beforeAll(async () => {
    sink = await startSmtpSink({ users: USERS });
    const route = (user: keyof typeof USERS): RouteConfig => ({
      type: 'smtp',
      host: sink.host,
      port: sink.port,
      auth: { user, pass: USERS[user] },
      tls: { ca: sink.ca },
    });
    mailer = createMailer({
      organisations: async (id) => (id === 'school-a' || id === 'school-b' ? [route(id)] : undefined),
      // The platform's own account: a request without an organisation must never use it.
      routes: [route('platform-default')],
      ...memoryStores(),
    });
    worker = mailer.startWorker({ pollInterval: 25 });
    const app = express();
    app.use(express.json());
    app.use(
      mailvia({
        mailer,
        organisation: async (req) => {
          if (req.get('x-organisation') === 'explode') throw new Error('session store down');
          return req.get('x-organisation');
        },
      }),
    );
    app.post('/invite', async (req: Request, res: Response, next: NextFunction) => {
      try {
        const receipt = await req.mail.send({
          from: 'office@school.example',
          to: req.body.to,
          subject: `Welcome from ${req.mail.organisation}`,
          text: 'Your account is ready.',
        });
        res.status(202).json({ route: receipt.route, accepted: receipt.accepted });
      } catch (err) {
        next(err);
      }
    });
    app.post('/queue', async (req: Request, res: Response, next: NextFunction) => {
      try {
        const queued = await req.mail.enqueue(
          { from: 'office@school.example', to: 'queued@example.org', subject: 'Queued', text: 'Later.' },
          { idempotencyKey: req.get('idempotency-key') },
        );
        res.status(202).json(queued);
      } catch (err) {
        next(err);
      }
    });
    app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
      if (MailError.isInstance(err)) res.status(400).json({ code: err.code, kind: err.kind, message: err.message });
      else res.status(500).json({ message: (err as Error).message });
    });
    server = await serve(app);
  });
  afterAll(async () => {
    await worker?.stop();
    await server?.close();
    await mailer?.close();
    await sink?.close();
  });

  const invite = (organisation: string | undefined, to: string) =>
    fetch(`${server.url}/invite`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(organisation ? { 'x-organisation': organisation } : {}) },
      body: JSON.stringify({ to }),
    });

  it("sends each request's mail with its own organisation's account", async () => {
    const a = await invite('school-a', 'parent.a@example.org');
    expect(a.status, await a.clone().text()).toBe(202);
    const b = await invite('school-b', 'parent.b@example.org');
    expect(b.status).toBe(202);
    const mails = await sink.waitFor(2);
    const byRcpt = Object.fromEntries(mails.map((m) => [m.to[0], m]));
    expect(byRcpt['parent.a@example.org']).toMatchObject({ user: 'school-a', pass: USERS['school-a'], secure: true });
    expect(byRcpt['parent.a@example.org']!.parsed.subject).toBe('Welcome from school-a');
    expect(byRcpt['parent.b@example.org']).toMatchObject({ user: 'school-b', pass: USERS['school-b'] });
  });

  it("enqueues for the request's organisation, once per idempotency key", async () => {
    const n = sink.received.length;
    const post = () =>
      fetch(`${server.url}/queue`, {
        method: 'POST',
        headers: { 'x-organisation': 'school-b', 'idempotency-key': 'k-1' },
      });
    const first = await json(await post());
    const second = await json(await post());
    expect(second).toMatchObject({ id: first.id, duplicate: true });
    const [mail] = (await sink.waitFor(n + 1)).slice(n);
    expect(mail).toMatchObject({ user: 'school-b', to: ['queued@example.org'] });
    await new Promise((r) => setTimeout(r, 200));
    expect(sink.received.length).toBe(n + 1);
  });

  it('refuses to send for a request without an organisation, never with the default account', async () => {
    const before = sink.received.length;
    const res = await invite(undefined, 'someone@example.org');
    expect(res.status).toBe(400);
    const body = await json(res);
    expect(body).toMatchObject({ code: 'ENOORGANISATION', kind: 'misconfigured' });
    expect(body.message).toMatch(/no organisation/);
    const queued = await fetch(`${server.url}/queue`, { method: 'POST' });
    expect((await json(queued)).code).toBe('ENOORGANISATION');
    await new Promise((r) => setTimeout(r, 200));
    expect(sink.received.length).toBe(before);
    expect(sink.received.some((m) => m.user === 'platform-default')).toBe(false);
  });

  it("hands a failing organisation lookup to the app's error handler", async () => {
    const res = await invite('explode', 'x@example.org');
    expect(res.status).toBe(500);
    expect((await json(res)).message).toBe('session store down');
  });

  it('answers what req.mail raises as JSON errors with mailviaErrorHandler()', async () => {
    const dead = await refusedPort();
    const failing = createMailer({
      organisations: (id) =>
        id === 'school-dead' ? [{ type: 'smtp', name: 'dead-relay', host: '127.0.0.1', port: dead }] : undefined,
    });
    const app = express();
    app.use(express.json());
    app.use(mailvia({ mailer: failing, organisation: (req) => req.get('x-organisation') }));
    app.post('/invite', async (req: Request, res: Response, next: NextFunction) => {
      try {
        await req.mail.send({ from: 'office@school.example', to: req.body.to, subject: 'Hi', text: 'Hello' });
        res.sendStatus(202);
      } catch (err) {
        next(err);
      }
    });
    app.use(mailviaErrorHandler());
    const s = await serve(app);
    const post = (org: string | undefined, to: string) =>
      fetch(`${s.url}/invite`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(org ? { 'x-organisation': org } : {}) },
        body: JSON.stringify({ to }),
      });
    try {
      const none = await post(undefined, 'a@example.org');
      expect(none.status).toBe(400);
      expect((await json(none)).error.code).toBe('no_organisation');
      const invalid = await post('school-dead', 'not-an-address');
      expect(invalid.status).toBe(422);
      expect((await json(invalid)).error).toMatchObject({
        code: 'invalid_message',
        details: { field: expect.stringMatching(/^to/) },
      });
      const failed = await post('school-dead', 'a@example.org');
      expect(failed.status).toBe(502);
      const { error } = await json(failed);
      expect(error).toMatchObject({ code: 'delivery_failed', details: { kind: 'unavailable' } });
      expect(error.help).toMatch(/#error-codes$/);
    } finally {
      await s.close();
      await failing.close();
    }
  });

  it('puts the handle on the property the app names', async () => {
    const app = express();
    app.use(mailvia({ mailer, organisation: () => 'school-b', property: 'mailvia' }));
    app.get('/', (req, res) => {
      const handle = (req as unknown as Record<string, { organisation?: string }>).mailvia;
      res.json({ organisation: handle?.organisation, mail: 'mail' in req });
    });
    const s = await serve(app);
    try {
      expect(await json(await fetch(s.url))).toEqual({ organisation: 'school-b', mail: false });
    } finally {
      await s.close();
    }
  });
});

it('cannot be created without a mailer or an organisation resolver', () => {
  const mailer = createMailer({ mode: 'development' });
  expect(() => mailvia({ organisation: () => 'a' } as never)).toThrow(/mailer/);
  expect(() => mailvia({ mailer } as never)).toThrow(/organisation/);
  expect(() => mailvia({ mailer, organisation: () => 'a', property: '__proto__' })).toThrow(/property/);
  expect(() => mailvia({ mailer, organisation: () => 'a', property: 'body' })).toThrow(/property/);
});
