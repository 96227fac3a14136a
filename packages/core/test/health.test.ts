import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMailer, type MailerStores, memoryStores, sqliteStores } from '../src/index.js';
import { refusedPort, type SmtpSink, startSmtpSink } from '../src/testing/index.js';

let sink: SmtpSink;
let dead: number;
const dir = mkdtempSync(join(tmpdir(), 'mailvia-health-'));
beforeAll(async () => {
  sink = await startSmtpSink({ users: { 'office@school-a.example': 'fake-pass-a' } });
  dead = await refusedPort();
});
afterAll(async () => {
  await sink.close();
  rmSync(dir, { recursive: true, force: true });
});

const families: [string, () => MailerStores][] = [
  ['memory', () => memoryStores()],
  ['sqlite', () => sqliteStores({ path: join(dir, `h-${Date.now()}-${Math.random()}.db`) })],
];

describe.each(families)('mailer.routeHealth() and resend on %s stores', (_name, stores) => {
  const make = () =>
    createMailer({
      ...stores(),
      organisations: (id) =>
        id === 'school-a'
          ? [
              {
                type: 'smtp',
                name: 'school-a-smtp',
                host: '127.0.0.1',
                port: sink.port,
                auth: { user: 'office@school-a.example', pass: 'fake-pass-a' },
                tls: { ca: sink.ca },
                quota: { perDay: 5 },
              },
            ]
          : id === 'school-down'
            ? [{ type: 'smtp', name: 'down', host: '127.0.0.1', port: dead }]
            : undefined,
    });
  const mail = (n: number) => ({
    from: 'office@school-a.example',
    to: `parent${n}@example.org`,
    subject: `Newsletter ${n}`,
    text: 'Hello.',
  });

  it('shows quota used, left and reset per route, live from the route state store; then exhausted', async () => {
    const mailer = make();
    try {
      const fresh = await mailer.routeHealth('school-a');
      expect(fresh).toEqual([
        {
          name: 'school-a-smtp',
          position: [],
          exhausted: false,
          quota: [
            {
              window: 'perDay',
              limit: 5,
              used: 0,
              left: 5,
              resetAt: Math.floor(Date.now() / 86_400_000) * 86_400_000 + 86_400_000,
              exhausted: false,
            },
          ],
        },
      ]);
      const before = sink.received.length;
      for (let i = 0; i < 3; i++) await mailer.send(mail(i), { organisation: 'school-a' });
      await sink.waitFor(before + 3);
      const [route] = await mailer.routeHealth('school-a');
      expect(route!.quota![0]).toMatchObject({ used: 3, left: 2, exhausted: false });
      expect(route!.exhausted).toBe(false);

      for (let i = 3; i < 5; i++) await mailer.send(mail(i), { organisation: 'school-a' });
      const [full] = await mailer.routeHealth('school-a');
      expect(full!.quota![0]).toMatchObject({ used: 5, left: 0, exhausted: true });
      expect(full!.exhausted).toBe(true);
      // the sixth is refused without reaching the server, and the route rests until the reset
      await expect(mailer.send(mail(6), { organisation: 'school-a' })).rejects.toMatchObject({ kind: 'limited' });
      expect(sink.received.length).toBe(before + 5);
      const [rested] = await mailer.routeHealth('school-a');
      expect(rested!.quota![0]!.used).toBe(5);
      expect(rested!.resting).toMatchObject({ kind: 'limited', until: expect.any(Number) });
      expect(rested!.lastFailureKind).toBe('limited');
    } finally {
      await mailer.close();
    }
  });

  it('refuses to resend a failed direct send with ERESENDUNAVAILABLE, saying why', async () => {
    const mailer = make();
    try {
      await expect(mailer.send(mail(1), { organisation: 'school-down' })).rejects.toMatchObject({
        kind: 'unavailable',
      });
      const [failed] = await mailer.log!.query({ organisation: 'school-down' });
      expect(failed).toMatchObject({ status: 'failed', via: 'send' });
      const err = await mailer.resend(failed!.id).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'ERESENDUNAVAILABLE', kind: 'refused', phase: 'validate' });
      expect((err as Error).message).toMatch(/direct send.*not stored/);
      // nothing was queued or changed
      expect(await mailer.queue!.get(failed!.id)).toBeUndefined();
      expect((await mailer.log!.get(failed!.id))?.status).toBe('failed');
    } finally {
      await mailer.close();
    }
  });
});
