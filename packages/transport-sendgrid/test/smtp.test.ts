import { connect } from 'node:net';
import { createOutbox, MailError, MemoryRouteState, prepareMessage, RouteRegistry } from '@mailvia/core';
import { refusedPort, type SmtpSink, startSmtpSink, transportConformance } from '@mailvia/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SENDGRID_SMTP_PORT, type SendgridSmtpOptions, sendgridSmtp, sendgridSmtpRoute } from '../src/index.js';

const KEY = 'SG.fake-smtp-key-cccccccccccccccccc.dddddddddddddddddddddddddddddddddddddddddd';
let sink: SmtpSink;
/** Answers AUTH as SendGrid does once the credits are spent. */
let spent: SmtpSink;
let deadPort: number;

beforeAll(async () => {
  [sink, spent, deadPort] = await Promise.all([
    startSmtpSink({
      users: { apikey: KEY },
      behaviour(stage, d) {
        if (stage === 'mail' && d.address === 'unverified@example.org')
          return { code: 550, message: 'The from address does not match a verified Sender Identity.' };
      },
    }),
    startSmtpSink({
      users: { apikey: KEY },
      behaviour: (stage) =>
        stage === 'auth' ? { code: 451, message: 'Authentication failed: Maximum credits exceeded' } : undefined,
    }),
    refusedPort(),
  ]);
});
afterAll(() => Promise.all([sink?.close(), spent?.close()]));

/** The MailError a send rejects with (a send that resolves fails the test). */
const failOf = async (sending: Promise<unknown>): Promise<MailError> => {
  const e: unknown = await sending.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(MailError.isInstance(e), `expected a MailError, got ${String(e)}`).toBe(true);
  return e as MailError;
};

const route = (over: Partial<SendgridSmtpOptions> = {}) =>
  sendgridSmtp({
    apiKey: KEY,
    host: '127.0.0.1',
    port: sink.port,
    requireTLS: true,
    tls: { ca: sink.ca, servername: 'localhost' },
    ...over,
  });

transportConformance({
  name: 'sendgrid+smtp against a loopback SMTP server (STARTTLS + AUTH apikey)',
  create: () => route(),
  received: () =>
    sink.received.map((m) => ({ subject: m.parsed.subject ?? '', from: m.from, to: m.to, text: m.parsed.text ?? '' })),
  secrets: [KEY],
  failures: {
    misconfigured: () => route({ apiKey: 'SG.revoked-key-eeeeeeeeeeeeeeeeeeeee' }),
    unavailable: () => route({ port: deadPort }),
    limited: () => route({ port: spent.port, tls: { ca: spent.ca, servername: 'localhost' } }),
  },
});

describe('sendgrid+smtp', () => {
  it('honours a port other than the default, authenticating as apikey with the key, over TLS', async () => {
    expect(sink.port).not.toBe(SENDGRID_SMTP_PORT);
    const t = route();
    const m = prepareMessage({
      from: 'school@example.org',
      to: 'parent@example.org',
      subject: 'port honoured',
      text: 'Bonjour',
      tags: ['t'],
    });
    await t.send(m);
    await t.close?.();
    const got = sink.received.find((r) => r.parsed.subject === 'port honoured');
    expect(got).toBeDefined();
    expect(got!.user).toBe('apikey');
    expect(got!.pass).toBe(KEY);
    expect(got!.secure).toBe(true);
    expect(got!.parsed.messageId).toBe(m.messageId);
  });

  it('goes to smtp.sendgrid.net:2525 when no host and port are given', async () => {
    const targets: string[] = [];
    const t = sendgridSmtp({
      apiKey: KEY,
      tls: { ca: sink.ca, servername: 'localhost' },
      pool: false,
      // stands in for the network: records where the route connects, and reaches the loopback sink
      connect: async ({ host, port }) => {
        targets.push(`${host}:${port}`);
        const s = connect(sink.port, '127.0.0.1');
        await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject));
        return s;
      },
    });
    expect(t.name).toMatch(/^sendgrid\+smtp:\/\/apikey@smtp\.sendgrid\.net:2525#key-[0-9a-f]{8}$/);
    const m = prepareMessage({
      from: 'school@example.org',
      to: 'parent@example.org',
      subject: 'default port',
      text: '.',
    });
    await t.send(m);
    expect(targets).toEqual(['smtp.sendgrid.net:2525']);
    expect(sink.received.some((r) => r.parsed.subject === 'default port' && r.secure)).toBe(true);
  });

  it("classifies '451 Authentication failed: Maximum credits exceeded' as a quota, not a bad key", async () => {
    const t = route({ port: spent.port, tls: { ca: spent.ca, servername: 'localhost' }, pool: false });
    const e = await failOf(
      t.send(prepareMessage({ from: 'school@example.org', to: 'p@example.org', subject: 'x', text: '.' })),
    );
    expect(e.kind).toBe('limited');
    expect(e.quota).toBe(true);
    expect(e.phase).toBe('auth');
    expect(e.rule).toBe('sendgrid-smtp/credits-exceeded');
    expect(e.message).not.toContain(KEY);
  });

  it('classifies a bad key (535) and an unverified sender (550 Sender Identity) as misconfigured', async () => {
    const bad = await failOf(
      route({ apiKey: 'SG.revoked-key-eeeeeeeeeeeeeeeeeeeee', pool: false }).send(
        prepareMessage({ from: 'school@example.org', to: 'p@example.org', subject: 'x', text: '.' }),
      ),
    );
    expect(bad.kind).toBe('misconfigured');
    expect(bad.rule).toBe('sendgrid-smtp/bad-key');
    expect(bad.message).not.toContain('SG.revoked-key');
    const t = route({ pool: false });
    const unverified = await failOf(
      t.send(prepareMessage({ from: 'unverified@example.org', to: 'p@example.org', subject: 'x', text: '.' })),
    );
    expect(unverified.kind).toBe('misconfigured');
    expect(unverified.rule).toBe('sendgrid-smtp/sender-identity');
  });
});

describe('sendgrid+smtp URLs', () => {
  const registry = new RouteRegistry([sendgridSmtpRoute]);
  const context = { outbox: createOutbox(), state: new MemoryRouteState(), stateKey: '' };

  it('reads the key, host and port, with 2525 when the URL gives no port', () => {
    expect(registry.parse(`sendgrid+smtp://${KEY}@smtp.sendgrid.net`)).toEqual({
      type: 'sendgrid+smtp',
      apiKey: KEY,
      host: 'smtp.sendgrid.net',
    });
    const t = registry.build(`sendgrid+smtp://${KEY}@default`, context);
    expect(t.name).toMatch(/^sendgrid\+smtp:\/\/apikey@smtp\.sendgrid\.net:2525#/);
    expect(registry.parse(`sendgrid+smtp://apikey:${KEY}@smtp.sendgrid.net:587?pool=false`)).toEqual({
      type: 'sendgrid+smtp',
      apiKey: KEY,
      host: 'smtp.sendgrid.net',
      port: 587,
      pool: false,
    });
    expect(registry.build(`sendgrid+smtp://${KEY}@smtp.sendgrid.net:465?secure=true`, context).name).toMatch(
      /^sendgrid\+smtp:\/\/apikey@smtp\.sendgrid\.net:465#/,
    );
  });

  it('sends through a URL-built route on a non-default port', async () => {
    const t = registry.build(
      {
        type: 'sendgrid+smtp',
        apiKey: KEY,
        host: '127.0.0.1',
        port: sink.port,
        tls: { ca: sink.ca, servername: 'localhost' },
      },
      context,
    );
    const r = await t.send(
      prepareMessage({ from: 'school@example.org', to: 'p@example.org', subject: 'from data', text: '.' }),
    );
    expect(r.accepted).toEqual(['p@example.org']);
    await t.close?.();
  });

  it('refuses unknown parameters and a missing key, without showing the key', () => {
    expect(() => registry.parse(`sendgrid+smtp://${KEY}@default?tls=off`)).toThrow(/query\.tls: unknown parameter/);
    try {
      registry.parse(`sendgrid+smtp://${KEY}@default?tls=off`);
    } catch (e) {
      expect((e as Error).message).not.toContain(KEY);
      expect((e as Error).message).toContain('sendgrid+smtp://****@default');
    }
    expect(() => registry.parse('sendgrid+smtp://smtp.sendgrid.net')).toThrow(/apiKey: is missing/);
    expect(() => registry.build({ type: 'sendgrid+smtp', apiKey: KEY, port: 'x' }, context)).toThrow(/port/);
  });
});
