import { Agent } from 'node:http';
import { connect } from 'node:net';
import { createMailer, MailError, type PreparedMessage, prepareMessage, type Transport } from '@mailvia/core';
import {
  type HttpPeer,
  httpFailureConformance,
  type Prism,
  refusedPort,
  reply,
  startHttpPeer,
  startPrism,
  transportConformance,
} from '@mailvia/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MESSAGE_ID_ARG, type SendgridApiOptions, sendgridApi, sendgridApiRoute } from '../src/index.js';

const SPEC = '/work/shared/contracts/sendgrid/tsg_mail_v3.json';
const KEY = 'SG.fake-key-aaaaaaaaaaaaaaaaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb';

let prism: Prism;
let deadPort: number;
/** Answers 429 with both rate-limit headers. */
let limiter: HttpPeer;
/** Reads the whole request, then drops the connection without a word. */
let dropper: HttpPeer;

beforeAll(async () => {
  [prism, deadPort, limiter, dropper] = await Promise.all([
    startPrism(SPEC, { resolveFrom: import.meta.url }),
    refusedPort(),
    startHttpPeer((_ex, res) =>
      reply(res, 429, { errors: [{ field: null, message: 'too many requests' }] }, { 'retry-after': '30' }),
    ),
    startHttpPeer((_ex, _res, req) => req.socket.destroy()),
  ]);
}, 90_000);
afterAll(async () => {
  await Promise.all([prism?.close(), limiter?.close(), dropper?.close()]);
});

const viaPrism = (over: Partial<SendgridApiOptions> = {}) => sendgridApi({ apiKey: KEY, baseUrl: prism.url, ...over });
const forced = (code: number) => viaPrism({ headers: { Prefer: `code=${code}` } });

const failOf = async (t: Transport, m: PreparedMessage): Promise<MailError> => {
  const err: unknown = await t.send(m).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(MailError.isInstance(err), `expected a MailError, got ${String(err)}`).toBe(true);
  const e = err as MailError;
  expect(e.message).not.toContain(KEY);
  expect(JSON.stringify(e)).not.toContain(KEY);
  return e;
};

const simple = (over: Record<string, unknown> = {}) =>
  prepareMessage({ from: 'school@example.org', to: 'parent@example.org', subject: 'Hello', text: 'Hi', ...over });

transportConformance({
  name: 'sendgrid+api against Prism serving tsg_mail_v3.json',
  create: () => viaPrism(),
  // Prism keeps no state: what SendGrid received is proven against a capturing server below
  secrets: [KEY],
  // verify() calls GET /v3/scopes, which this contract does not describe: tested on its own below
  verify: false,
  failures: {
    refused: () => forced(400),
    misconfigured: () => forced(401),
    unavailable: () => forced(500),
    // 429 is not in SendGrid's contract (Prism refuses to force it): a loopback failure injection
    limited: () => sendgridApi({ apiKey: KEY, baseUrl: limiter.url }),
    unknown: () => sendgridApi({ apiKey: KEY, baseUrl: dropper.url }),
  },
});

httpFailureConformance({
  name: 'sendgrid+api',
  create: (baseUrl, { timeout }) => sendgridApi({ apiKey: KEY, baseUrl, timeout }),
  secrets: [KEY],
});

describe('sendgrid+api against the contract (Prism)', () => {
  it('a message using every field the route maps is valid v3 JSON: 202 Accepted', async () => {
    const m = prepareMessage({
      from: { name: 'École A', address: 'school@example.org' },
      to: ['parent@example.org', 'Zoë <zoe@bücher.example>'],
      cc: 'teacher@example.org',
      bcc: ['audit@example.org', 'parent@example.org'],
      replyTo: ['office@example.org', 'head@example.org'],
      subject: 'Bulletin — trimestre 1',
      text: 'Bonjour',
      html: '<p>Bonjour <img src="cid:logo"></p>',
      headers: { 'X-School': 'A' },
      tags: ['bulletin', 'term-1', 'bulletin'],
      metadata: { school: 'a', pupil: '42' },
      idempotencyKey: 'bulletin-42-t1',
      attachments: [
        { filename: 'report.pdf', content: Buffer.from('%PDF-1.4 fake'), contentType: 'application/pdf' },
        { cid: 'logo', content: 'iVBORw0KGgo=', encoding: 'base64', contentType: 'image/png' },
      ],
    });
    const r = await viaPrism().send(m);
    expect(r.response).toBe('HTTP 202');
    expect(r.accepted.sort()).toEqual(m.envelope.to.sort());
    expect(r.acceptedBy).toBe('provider');
  });

  it('an address SendGrid does not take comes back 400 with the violation: refused, naming the field', async () => {
    // a quoted local part is a valid address to Mailvia, but not to the contract's "email" format
    const e = await failOf(viaPrism(), simple({ to: '"john doe"@example.org' }));
    expect(e.kind).toBe('refused');
    expect(e.phase).toBe('response');
    expect(e.code).toBe('HTTP 400');
    expect(e.message).toContain('personalizations.0.to.0.email');
    expect(e.rule).toBe('sendgrid-api/payload-refused');
  });

  it('more than 10 tags break the categories limit: refused, naming categories', async () => {
    const tags = Array.from({ length: 11 }, (_, i) => `tag-${i}`);
    const e = await failOf(viaPrism(), simple({ tags }));
    expect(e.kind).toBe('refused');
    expect(e.message).toMatch(/categories/);
  });

  it.each([
    [401, 'misconfigured', 'sendgrid-api/bad-key'],
    [403, 'misconfigured', 'sendgrid-api/bad-key'],
    [413, 'unavailable', 'sendgrid-api/too-large'],
    [500, 'unavailable', 'sendgrid-api/server-error'],
  ])('HTTP %i forced with Prefer maps to %s', async (code, kind, rule) => {
    const e = await failOf(forced(code), simple());
    expect(e.kind).toBe(kind);
    expect(e.status).toBe(code);
    expect(e.rule).toBe(rule);
  });

  it('all traffic goes through the injected agent (as it would through a SOCKS proxy agent)', async () => {
    const opened: string[] = [];
    class RedirectingAgent extends Agent {
      override createConnection(options: { host?: string | null; port?: number | null }) {
        opened.push(`${options.host}:${options.port}`);
        return connect(prism.port, '127.0.0.1');
      }
    }
    const agent = new RedirectingAgent();
    try {
      // nothing listens on port 1: only the agent can carry the request to the contract server
      const r = await sendgridApi({ apiKey: KEY, baseUrl: 'http://localhost:1', agent }).send(simple());
      expect(r.response).toBe('HTTP 202');
      expect(opened).toEqual(['localhost:1']);
    } finally {
      agent.destroy();
    }
  });

  it('a mailer builds the route from its URL and sends through it', async () => {
    const mailer = createMailer({
      factories: [sendgridApiRoute],
      organisations: () => [`sendgrid+api://${KEY}@default?endpoint=${prism.url}`],
    });
    try {
      const r = await mailer.send(
        { from: 'school@example.org', to: 'parent@example.org', subject: 'via url', text: '.' },
        { organisation: 'school-a' },
      );
      expect(r.response).toBe('HTTP 202');
      expect(r.route).not.toContain(KEY);
      expect(r.route).toMatch(/^sendgrid\+api:\/\/127\.0\.0\.1:\d+#key-[0-9a-f]{8}$/);
    } finally {
      await mailer.close();
    }
  });
});

describe('sendgrid+api: what SendGrid receives (capturing loopback server)', () => {
  let peer: HttpPeer;
  beforeAll(async () => {
    peer = await startHttpPeer((_ex, res) => reply(res, 202, undefined, { 'x-message-id': 'sg-queued-1' }));
  });
  afterAll(() => peer.close());

  it('sends the v3 JSON with sender, recipients, content, attachments, categories and custom args', async () => {
    const m = prepareMessage({
      from: { name: 'École A', address: 'school@example.org' },
      to: ['parent@example.org'],
      cc: 'teacher@example.org',
      bcc: ['audit@example.org', 'Parent@example.org'],
      replyTo: 'office@example.org',
      subject: 'Bulletin',
      text: 'Bonjour',
      html: '<p>Bonjour</p>',
      headers: { 'X-School': 'A' },
      tags: ['bulletin', 'term-1'],
      metadata: { school: 'a' },
      idempotencyKey: 'bulletin-42',
      attachments: [{ filename: 'report.pdf', content: Buffer.from('%PDF-1.4 fake'), contentType: 'application/pdf' }],
    });
    const receipt = await sendgridApi({ apiKey: KEY, baseUrl: peer.url }).send(m);
    const got = peer.requests.at(-1)!;
    expect(got.method).toBe('POST');
    expect(got.url).toBe('/v3/mail/send');
    expect(got.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(got.headers['content-type']).toMatch(/^application\/json/);
    const body = JSON.parse(got.body.toString());
    expect(body.from).toEqual({ email: 'school@example.org', name: 'École A' });
    expect(body.reply_to).toEqual({ email: 'office@example.org' });
    expect(body.subject).toBe('Bulletin');
    expect(body.personalizations).toHaveLength(1);
    const [p] = body.personalizations;
    expect(p.to).toEqual([{ email: 'parent@example.org' }]);
    expect(p.cc).toEqual([{ email: 'teacher@example.org' }]);
    // SendGrid refuses one address twice in a personalization: the Bcc copy of a To is dropped
    expect(p.bcc).toEqual([{ email: 'audit@example.org' }]);
    expect(p.custom_args).toEqual({
      school: 'a',
      [MESSAGE_ID_ARG]: m.messageId,
      mailvia_idempotency_key: 'bulletin-42',
    });
    expect(body.content).toEqual([
      { type: 'text/plain', value: 'Bonjour' },
      { type: 'text/html', value: '<p>Bonjour</p>' },
    ]);
    expect(body.attachments).toHaveLength(1);
    expect(body.attachments[0]).toMatchObject({
      filename: 'report.pdf',
      type: 'application/pdf',
      disposition: 'attachment',
    });
    expect(Buffer.from(body.attachments[0].content, 'base64').toString()).toBe('%PDF-1.4 fake');
    expect(body.categories).toEqual(['bulletin', 'term-1']);
    expect(body.headers).toEqual({ 'X-School': 'A' });
    expect(receipt.providerMessageId).toBe('sg-queued-1');
    expect(receipt.messageId).toBe(m.messageId);
    expect(receipt.accepted.sort()).toEqual(['audit@example.org', 'parent@example.org', 'teacher@example.org'].sort());
  });

  it('does not send a Bcc-only message (SendGrid needs a To): unavailable, so another route takes it', async () => {
    const before = peer.requests.length;
    const e = await failOf(
      sendgridApi({ apiKey: KEY, baseUrl: peer.url }),
      prepareMessage({ from: 'school@example.org', bcc: 'a@example.org', subject: 'x', text: '.' }),
    );
    expect(e.kind).toBe('unavailable');
    expect(e.code).toBe('ENOTO');
    expect(peer.requests.length).toBe(before);
  });
});

describe('sendgrid+api failure injection (loopback servers)', () => {
  const answering = async (
    status: number,
    body: unknown,
    headers: Record<string, string> = {},
  ): Promise<[Transport, HttpPeer]> => {
    const peer = await startHttpPeer((_ex, res) => reply(res, status, body, headers));
    return [sendgridApi({ apiKey: KEY, baseUrl: peer.url }), peer];
  };

  it("401 'Maximum credits exceeded' is a quota (limited), not a bad key", async () => {
    const [t, peer] = await answering(401, {
      errors: [{ field: null, message: 'Maximum credits exceeded', help: null }],
    });
    try {
      const e = await failOf(t, simple());
      expect(e.kind).toBe('limited');
      expect(e.quota).toBe(true);
      expect(e.rule).toBe('sendgrid-api/credits-exceeded');
      expect(e.message).toContain('Maximum credits exceeded');
    } finally {
      await peer.close();
    }
  });

  it('401 with another body is a bad key: misconfigured', async () => {
    const [t, peer] = await answering(401, {
      errors: [{ field: null, message: 'The provided authorization grant is invalid, expired, or revoked' }],
    });
    try {
      const e = await failOf(t, simple());
      expect(e.kind).toBe('misconfigured');
      expect(e.quota).toBe(false);
      expect(e.message).toContain('authorization grant is invalid');
    } finally {
      await peer.close();
    }
  });

  it('403 Sender Identity is misconfigured; 403 temporary block is limited', async () => {
    const [a, pa] = await answering(403, {
      errors: [{ field: 'from', message: 'The from address does not match a verified Sender Identity.' }],
    });
    const [b, pb] = await answering(403, { errors: [{ message: 'Too many bad requests. Temporary block' }] });
    try {
      const ea = await failOf(a, simple());
      expect(ea.kind).toBe('misconfigured');
      expect(ea.rule).toBe('sendgrid-api/sender-identity');
      expect(ea.message).toContain('field from');
      const eb = await failOf(b, simple());
      expect(eb.kind).toBe('limited');
    } finally {
      await Promise.all([pa.close(), pb.close()]);
    }
  });

  it('400 naming a recipient field is refused and names the recipient', async () => {
    const [t, peer] = await answering(400, {
      errors: [{ field: 'personalizations.0.to.1.email', message: 'Does not contain a valid address.' }],
    });
    try {
      const e = await failOf(t, simple({ to: ['ok@example.org', 'bad@example.org'] }));
      expect(e.kind).toBe('refused');
      expect(e.recipients).toEqual(['bad@example.org']);
      expect(e.message).toContain('personalizations.0.to.1.email');
    } finally {
      await peer.close();
    }
  });

  it('429 with Retry-After: limited, retry after that many seconds', async () => {
    const e = await failOf(sendgridApi({ apiKey: KEY, baseUrl: limiter.url }), simple());
    expect(e.kind).toBe('limited');
    expect(e.code).toBe('HTTP 429');
    expect(e.retryAfter).toBe(30_000);
  });

  it('429 with X-RateLimit-Reset (epoch seconds): limited until the reset', async () => {
    const reset = Math.floor(Date.now() / 1000) + 120;
    const [t, peer] = await answering(
      429,
      { errors: [{ message: 'too many requests' }] },
      { 'x-ratelimit-limit': '600', 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': String(reset) },
    );
    try {
      const e = await failOf(t, simple());
      expect(e.kind).toBe('limited');
      expect(e.retryAfter).toBeGreaterThan(100_000);
      expect(e.retryAfter).toBeLessThanOrEqual(120_000);
    } finally {
      await peer.close();
    }
  });

  it('502/503 are unavailable', async () => {
    const [t, peer] = await answering(503, '<html>Service Unavailable</html>');
    try {
      const e = await failOf(t, simple());
      expect(e.kind).toBe('unavailable');
      expect(e.message).toContain('Service Unavailable');
    } finally {
      await peer.close();
    }
  });
});

describe('sendgrid+api verify() (GET /v3/scopes)', () => {
  it('resolves when the key has mail.send, rejects when it lacks it or is refused', async () => {
    const peer = await startHttpPeer((ex, res) => {
      if (ex.headers.authorization === `Bearer ${KEY}`)
        return reply(res, 200, { scopes: ['mail.send', 'user.profile.read'] });
      if (ex.headers.authorization === 'Bearer SG.read-only-key')
        return reply(res, 200, { scopes: ['user.profile.read'] });
      reply(res, 401, { errors: [{ field: null, message: 'authorization required' }] });
    });
    try {
      await expect(sendgridApi({ apiKey: KEY, baseUrl: peer.url }).verify?.()).resolves.toBeUndefined();
      expect(peer.requests.at(-1)).toMatchObject({ method: 'GET', url: '/v3/scopes' });
      const readOnly = await sendgridApi({ apiKey: 'SG.read-only-key', baseUrl: peer.url })
        .verify?.()
        .catch((e) => e);
      expect(readOnly.kind).toBe('misconfigured');
      expect(readOnly.message).toContain('Mail Send');
      const bad = await sendgridApi({ apiKey: 'SG.revoked-key', baseUrl: peer.url })
        .verify?.()
        .catch((e) => e);
      expect(bad.kind).toBe('misconfigured');
      expect(bad.message).not.toContain('SG.revoked-key');
      const down = await sendgridApi({ apiKey: KEY, baseUrl: `http://127.0.0.1:${deadPort}` })
        .verify?.()
        .catch((e) => e);
      expect(down.kind).toBe('unavailable');
    } finally {
      await peer.close();
    }
  });
});
