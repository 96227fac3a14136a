import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  capture,
  createMailer,
  createOutbox,
  DeliveryError,
  type MailerEvents,
  RouteConfigError,
} from '../src/index.js';
import {
  refusedPort,
  type SmtpSink,
  startSilentListener,
  startSmtpSink,
  transportConformance,
} from '../src/testing/index.js';

let upstreamA: SmtpSink;
let upstreamB: SmtpSink;
let dead: number;
beforeAll(async () => {
  upstreamA = await startSmtpSink({ users: { 'a@school-a.example': 'fake-pass-a' } });
  upstreamB = await startSmtpSink({ users: { 'b@school-b.example': 'fake-pass-b' } });
  dead = await refusedPort();
});
afterAll(async () => {
  await upstreamA.close();
  await upstreamB.close();
});

// routes as data (objects) and as URLs, mixed, as an application's database would hold them
const routesOf = (id: string) => {
  if (id === 'school-a') {
    return [
      {
        type: 'smtp',
        host: '127.0.0.1',
        port: upstreamA.port,
        auth: { user: 'a@school-a.example', pass: 'fake-pass-a' },
        tls: { ca: upstreamA.ca },
      },
    ];
  }
  if (id === 'school-b') {
    return [
      `smtp://127.0.0.1:${dead}`,
      {
        type: 'smtp',
        host: '127.0.0.1',
        port: upstreamB.port,
        auth: { user: 'b@school-b.example', pass: 'fake-pass-b' },
        tls: { ca: upstreamB.ca },
      },
      'capture://',
    ];
  }
  return undefined;
};

describe('mailer with organisations', () => {
  it('sends each organisation through its own account, with events', async () => {
    let resolved = 0;
    const mailer = createMailer({
      organisations: (id) => {
        resolved++;
        return routesOf(id);
      },
    });
    const events: string[] = [];
    const rested: MailerEvents['route-rested'][0][] = [];
    mailer.on('route-rested', (e) => rested.push(e));
    for (const e of ['attempt', 'sent', 'fell-over', 'route-rested', 'failed'] as (keyof MailerEvents)[]) {
      mailer.on(e, () => events.push(e));
    }
    const ra = await mailer.send(
      { from: 'a@school-a.example', to: 'p@example.org', subject: 'from A', text: 'a' },
      { organisation: 'school-a' },
    );
    const rb = await mailer.send(
      { from: 'b@school-b.example', to: 'p@example.org', subject: 'from B', text: 'b' },
      { organisation: 'school-b' },
    );
    await mailer.send(
      { from: 'a@school-a.example', to: 'p@example.org', subject: 'from A again', text: 'a' },
      { organisation: 'school-a' },
    );
    expect(upstreamA.received.find((m) => m.parsed.subject === 'from A')?.user).toBe('a@school-a.example');
    expect(upstreamB.received.find((m) => m.parsed.subject === 'from B')?.user).toBe('b@school-b.example');
    expect(ra.attempts).toHaveLength(1);
    expect(rb.attempts.map((a) => a.ok)).toEqual([false, true]);
    expect(resolved).toBe(2);
    expect(events).toContain('fell-over');
    expect(events).toContain('route-rested');
    expect(rested[0]).toMatchObject({
      organisation: 'school-b',
      kind: 'unavailable',
      code: 'ECONNREFUSED',
      rule: 'network/connect-failed',
    });
    expect(events.filter((e) => e === 'sent')).toHaveLength(3);
    await mailer.close();
  });

  it('rebuilds a chain after invalidate(), and bounds the chains kept open', async () => {
    let resolved = 0;
    const mailer = createMailer({
      organisations: () => {
        resolved++;
        return ['capture://'];
      },
      cache: { maxOrganisations: 2 },
    });
    for (const org of ['o1', 'o2', 'o3'])
      await mailer.send({ from: 'x@example.org', to: 'y@example.org', subject: org }, { organisation: org });
    expect(mailer.cachedOrganisations).toBe(2);
    await mailer.send({ from: 'x@example.org', to: 'y@example.org', subject: 'again' }, { organisation: 'o3' });
    expect(resolved).toBe(3);
    await mailer.invalidate('o3');
    await mailer.send({ from: 'x@example.org', to: 'y@example.org', subject: 'after' }, { organisation: 'o3' });
    expect(resolved).toBe(4);
    await mailer.close();
  });

  it('says which organisation has no routes, and that a send needs one', async () => {
    const mailer = createMailer({ organisations: routesOf });
    await expect(mailer.send({ from: 'x@example.org', to: 'y@example.org' }, { organisation: 'nope' })).rejects.toThrow(
      /no routes for organisation "nope"/,
    );
    await expect(mailer.send({ from: 'x@example.org', to: 'y@example.org' })).rejects.toBeInstanceOf(RouteConfigError);
    await mailer.close();
  });

  it('raises a DeliveryError with every attempt and emits failed', async () => {
    const mailer = createMailer({ routes: [`smtp://127.0.0.1:${dead}`, `smtp://127.0.0.1:${dead}?name=second`] });
    let failed = 0;
    mailer.on('failed', () => failed++);
    const err = await mailer.send({ from: 'x@example.org', to: 'y@example.org', subject: 's' }).catch((e) => e);
    expect(err).toBeInstanceOf(DeliveryError);
    expect(err.attempts).toHaveLength(2);
    expect(failed).toBe(1);
    await mailer.close();
  });

  it('development mode captures every mail per organisation and sends nothing', async () => {
    const before = upstreamA.received.length;
    const mailer = createMailer({ mode: 'development', organisations: routesOf });
    const r = await mailer.send(
      { from: 'a@school-a.example', to: 'p@example.org', subject: 'dev', text: 'x' },
      { organisation: 'school-a' },
    );
    expect(r.acceptedBy).toBe('outbox');
    expect(upstreamA.received.length).toBe(before);
    const list = await mailer.outbox.list({ organisation: 'school-a' });
    expect(list[0]).toMatchObject({ subject: 'dev', organisation: 'school-a', to: ['p@example.org'] });
    expect((await mailer.outbox.get(list[0]!.id))?.raw.toString()).toContain('Subject: dev');
    expect(await mailer.outbox.list({ organisation: 'school-b' })).toEqual([]);
    await mailer.close();
  });

  it('refuses an unknown mode', () => {
    expect(() => createMailer({ mode: 'staging' as never })).toThrow(RouteConfigError);
  });
});

describe('outbox', () => {
  it('writes .eml + .json to a folder, reads them back, lists per organisation, clears', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outbox-'));
    const outbox = createOutbox({ dir, limit: 2 });
    const route = capture({ outbox });
    const { prepareMessage } = await import('../src/index.js');
    for (const s of ['one', 'two', 'three']) {
      await route.send(prepareMessage({ from: 'x@example.org', to: 'y@example.org', subject: s }), {
        organisation: s === 'two' ? 'b' : 'a',
      });
    }
    expect(
      readdirSync(dir)
        .sort()
        .filter((f) => f.endsWith('.eml')),
    ).toHaveLength(2);
    const again = createOutbox({ dir, limit: 10 });
    expect((await again.list()).map((m) => m.subject)).toEqual(['three', 'two']);
    expect((await again.list({ organisation: 'a' })).map((m) => m.subject)).toEqual(['three']);
    expect(await again.clear({ organisation: 'a' })).toBe(1);
    expect(readdirSync(dir)).toHaveLength(2);
  });
});

describe('the send deadline (timeout)', () => {
  it('fails a send to a server that never answers, saying the deadline passed; a caller’s abort says so too', async () => {
    const silent = await startSilentListener();
    const mailer = createMailer({ routes: [{ type: 'smtp', host: '127.0.0.1', port: silent.port }], timeout: 400 });
    try {
      const mail = { from: 'office@school-a.example', to: 'parent@example.org', subject: 'Deadline', text: 'hi' };
      const t0 = Date.now();
      const late = await mailer.send(mail).catch((e: unknown) => e);
      expect(late).toMatchObject({ kind: 'unavailable' });
      expect(String((late as Error).message)).toMatch(/deadline passed/);
      expect(Date.now() - t0).toBeLessThan(5_000);
      const controller = new AbortController();
      const pending = mailer.send(mail, { signal: controller.signal }).catch((e: unknown) => e);
      setTimeout(() => controller.abort(new Error('the caller gave up')), 50);
      expect(String(((await pending) as Error).message)).toMatch(/the caller gave up/);
      expect(silent.connections).toBeGreaterThanOrEqual(2);
    } finally {
      await mailer.close();
      await silent.close();
    }
  });
});

const conformanceOutbox = createOutbox();
transportConformance({
  name: 'capture',
  create: () => capture({ outbox: conformanceOutbox }),
  received: async () =>
    (await conformanceOutbox.list()).map((m) => ({ subject: m.subject, to: m.envelope.to, from: m.envelope.from })),
  acceptedBy: 'outbox',
});
