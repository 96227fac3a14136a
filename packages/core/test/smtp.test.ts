import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MailError, prepareMessage, smtp } from '../src/index.js';
import {
  refusedPort,
  type SmtpSink,
  startSilentListener,
  startSmtpSink,
  transportConformance,
} from '../src/testing/index.js';

const USER = 'school-a@example.org';
const PASS = 'fake-app-password-aaaa';
let sink: SmtpSink;
let deadPort: number;

beforeAll(async () => {
  sink = await startSmtpSink({
    users: { [USER]: PASS },
    behaviour(stage, d) {
      if (stage === 'rcpt' && d.address === 'nobody@example.org')
        return { code: 550, message: '5.1.1 No such user here' };
      if (stage === 'data' && d.mail?.parsed.subject?.includes('fail-limited')) {
        return { code: 550, message: '5.4.5 Daily user sending limit exceeded.' };
      }
      if (stage === 'data' && d.mail?.parsed.subject?.includes('fail-unknown')) return 'cut';
    },
  });
  deadPort = await refusedPort();
});
afterAll(() => sink.close());

const route = (over: Partial<Parameters<typeof smtp>[0]> = {}) =>
  smtp({
    host: '127.0.0.1',
    port: sink.port,
    auth: { user: USER, pass: PASS },
    requireTLS: true,
    tls: { ca: sink.ca, servername: 'localhost' },
    ...over,
  });

transportConformance({
  name: 'smtp (STARTTLS + AUTH)',
  create: () => route(),
  received: () =>
    sink.received.map((m) => ({ subject: m.parsed.subject ?? '', from: m.from, to: m.to, text: m.parsed.text ?? '' })),
  secrets: [PASS],
  failures: {
    misconfigured: () => route({ auth: { user: USER, pass: 'wrong-password-bbbb' } }),
    unavailable: () => route({ port: deadPort }),
    refused: () => ({
      ...route(),
      send: (m, o) => route().send(prepareMessage({ ...m, to: 'nobody@example.org' }), o),
      name: route().name,
      specificationVersion: 'v1' as const,
    }),
    limited: () => route(),
    unknown: () => route(),
  },
});

describe('smtp route: what the far end sees', () => {
  it('delivers over STARTTLS, authenticated, with envelope, headers, body and attachment intact', async () => {
    const t = route();
    const m = prepareMessage({
      from: { name: 'École A', address: USER },
      to: ['parent@example.org', 'Zoë <zoe@bücher.example>'],
      bcc: 'audit@example.org',
      subject: 'Bulletin — trimestre 1',
      text: 'Bonjour',
      html: '<p>Bonjour</p>',
      headers: { 'X-School': 'A' },
      attachments: [{ filename: 'report.pdf', content: Buffer.from('%PDF-1.4 fake'), contentType: 'application/pdf' }],
    });
    const receipt = await t.send(m);
    await t.close?.();
    const got = sink.received.find((r) => r.parsed.subject === 'Bulletin — trimestre 1')!;
    expect(got).toBeDefined();
    expect(got.user).toBe(USER);
    expect(got.pass).toBe(PASS);
    expect(got.secure).toBe(true);
    expect(got.from).toBe(USER);
    // the envelope carries the IDN domain in punycode; smtp-server shows it back in Unicode
    expect(m.envelope.to).toContain('zoe@xn--bcher-kva.example');
    expect(got.to.sort()).toEqual(['audit@example.org', 'parent@example.org', 'zoe@bücher.example']);
    expect(got.parsed.headers.get('x-school')).toBe('A');
    expect(got.parsed.headers.get('bcc')).toBeUndefined();
    expect(got.parsed.messageId).toBe(m.messageId);
    expect(got.parsed.from?.value[0]?.name).toBe('École A');
    expect(got.parsed.text?.trim()).toBe('Bonjour');
    expect(got.parsed.attachments[0]?.filename).toBe('report.pdf');
    expect(got.parsed.attachments[0]?.content.toString()).toBe('%PDF-1.4 fake');
    expect(receipt.providerMessageId ?? receipt.response).toBeTruthy();
  });

  it('refuses to send AUTH in clear text to a host other than loopback', () => {
    expect(() => smtp({ host: 'smtp.example.org', auth: { user: 'u', pass: 'p' }, requireTLS: false })).toThrow(
      /clear text/,
    );
  });

  it('does not go on in clear text when TLS is required and the server offers no STARTTLS', async () => {
    const plain = await startSmtpSink({ starttls: false, users: { [USER]: PASS } });
    try {
      const t = smtp({
        host: '127.0.0.1',
        port: plain.port,
        auth: { user: USER, pass: PASS },
        requireTLS: true,
        pool: false,
      });
      const err = await t
        .send(prepareMessage({ from: USER, to: 'x@example.org', subject: 'no tls', text: '.' }))
        .catch((e) => e);
      expect(MailError.isInstance(err)).toBe(true);
      expect(err.kind).toBe('misconfigured');
      expect(plain.received).toHaveLength(0);
    } finally {
      await plain.close();
    }
  });

  it('finds a listener that never greets in about two seconds: route unavailable, phase connect', async () => {
    const silent = await startSilentListener();
    try {
      const t = smtp({ host: '127.0.0.1', port: silent.port, pool: false });
      const err = await t
        .send(prepareMessage({ from: USER, to: 'x@example.org', subject: 'silent', text: '.' }))
        .catch((e) => e);
      expect(err.kind).toBe('unavailable');
      expect(err.phase).toBe('connect');
    } finally {
      await silent.close();
    }
  });

  it('classifies a cut after the final dot as an unknown outcome, phase data-sent', async () => {
    const t = route();
    const err = await t
      .send(prepareMessage({ from: USER, to: 'x@example.org', subject: 'fail-unknown again', text: '.' }))
      .catch((e) => e);
    expect(err.kind).toBe('unknown');
    expect(err.phase).toBe('data-sent');
    await t.close?.();
  });

  it('classifies 550 5.1.1 at RCPT as refused, naming the recipient', async () => {
    const t = route();
    const err = await t
      .send(prepareMessage({ from: USER, to: 'nobody@example.org', subject: 'rcpt', text: '.' }))
      .catch((e) => e);
    expect(err.kind).toBe('refused');
    expect(err.phase).toBe('envelope');
    expect(err.code).toBe('550 5.1.1');
    expect(err.recipients).toEqual(['nobody@example.org']);
    await t.close?.();
  });

  it('sends to the accepted recipients and reports the refused one', async () => {
    const t = route();
    const r = await t.send(
      prepareMessage({ from: USER, to: ['ok@example.org', 'nobody@example.org'], subject: 'partial', text: '.' }),
    );
    expect(r.accepted).toEqual(['ok@example.org']);
    expect(r.rejected).toEqual(['nobody@example.org']);
    await t.close?.();
  });

  it("classifies Gmail's daily limit (550 5.4.5) as limited, a quota", async () => {
    const t = route();
    const err = await t
      .send(prepareMessage({ from: USER, to: 'x@example.org', subject: 'fail-limited', text: '.' }))
      .catch((e) => e);
    expect(err.kind).toBe('limited');
    expect(err.quota).toBe(true);
    expect(err.phase).toBe('response');
    await t.close?.();
  });
});

describe('smtp route with a connect hook (proxies)', () => {
  it('does not send when the signal aborts while the hook is connecting', async () => {
    const { connect } = await import('node:net');
    const before = sink.received.length;
    const ac = new AbortController();
    const t = smtp({
      host: '127.0.0.1',
      port: sink.port,
      tls: { ca: sink.ca, servername: 'localhost' },
      auth: { user: USER, pass: PASS },
      // a slow proxy that ignores the signal
      connect: ({ host, port }) =>
        new Promise((resolve) => {
          setTimeout(() => {
            const s = connect(port, host, () => resolve(s));
          }, 150);
        }),
    });
    setTimeout(() => ac.abort(), 50);
    const err = await t
      .send(prepareMessage({ from: USER, to: 'x@example.org', subject: 'abort-in-connect', text: '.' }), {
        signal: ac.signal,
      })
      .catch((e) => e);
    expect(err.code).toBe('EABORT');
    expect(err.kind).toBe('unavailable');
    await new Promise((r) => setTimeout(r, 300));
    expect(sink.received.length).toBe(before);
    await t.close?.();
  });
});
