import { Agent } from 'node:http';
import { connect } from 'node:net';
import {
  createMailer,
  createOutbox,
  MailError,
  MemoryRouteState,
  type PreparedMessage,
  prepareMessage,
  RouteConfigError,
  RouteRegistry,
  type Transport,
} from '@mailvia/core';
import {
  type HttpPeer,
  httpFailureConformance,
  type Prism,
  reply,
  startHttpPeer,
  startPrism,
  transportConformance,
} from '@mailvia/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MailgunOptions, MESSAGE_ID_VARIABLE, mailgun, mailgunRoute } from '../src/index.js';

const SPEC = '/work/shared/contracts/mailgun/mailgun-openapi.prism-relaxed.yaml';
const KEY = 'fake-mailgun-key-0123456789abcdef-aaaaaaaa-bbbbbbbb';
const DOMAIN = 'mg.example.org';

let prism: Prism;
/** Reads the whole request, then drops the connection without a word. */
let dropper: HttpPeer;

beforeAll(async () => {
  [prism, dropper] = await Promise.all([
    startPrism(SPEC, { resolveFrom: import.meta.url }),
    startHttpPeer((_ex, _res, req) => req.socket.destroy()),
  ]);
}, 90_000);
afterAll(async () => {
  await Promise.all([prism?.close(), dropper?.close()]);
});

const viaPrism = (over: Partial<MailgunOptions> = {}) =>
  mailgun({ apiKey: KEY, domain: DOMAIN, baseUrl: prism.url, ...over });
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
  prepareMessage({ from: `school@${DOMAIN}`, to: 'parent@example.org', subject: 'Hello', text: 'Hi', ...over });

transportConformance({
  name: 'mailgun against Prism serving the Mailgun OpenAPI (relaxed)',
  create: () => viaPrism(),
  // Prism keeps no state: what Mailgun received is proven against a capturing server below
  secrets: [KEY],
  from: `school@${DOMAIN}`,
  failures: {
    refused: () => forced(400),
    misconfigured: () => forced(401),
    limited: () => forced(429),
    unavailable: () => forced(500),
    unknown: () => mailgun({ apiKey: KEY, domain: DOMAIN, baseUrl: dropper.url }),
  },
});

httpFailureConformance({
  name: 'mailgun',
  create: (baseUrl, { timeout }) => mailgun({ apiKey: KEY, domain: DOMAIN, baseUrl, timeout }),
  from: `school@${DOMAIN}`,
  secrets: [KEY],
});

describe('mailgun against the contract (Prism, relaxed spec)', () => {
  it('a message using every field the route maps is accepted: 200 with an id', async () => {
    const m = prepareMessage({
      from: { name: 'École A', address: `school@${DOMAIN}` },
      to: ['parent@example.org', 'Zoë <zoe@bücher.example>'],
      cc: 'teacher@example.org',
      bcc: 'audit@example.org',
      replyTo: 'office@example.org',
      subject: 'Bulletin — trimestre 1',
      text: 'Bonjour',
      html: '<p>Bonjour <img src="cid:logo"></p>',
      headers: { 'X-School': 'A' },
      tags: ['bulletin', 'term-1'],
      metadata: { school: 'a' },
      idempotencyKey: 'bulletin-42-t1',
      attachments: [
        { filename: 'report.pdf', content: Buffer.from('%PDF-1.4 fake'), contentType: 'application/pdf' },
        { cid: 'logo', content: 'iVBORw0KGgo=', encoding: 'base64', contentType: 'image/png' },
      ],
    });
    const r = await viaPrism({ testMode: true }).send(m);
    expect(r.providerMessageId).toBe('message-id');
    expect(r.response).toBe('HTTP 200 Queued. Thank you.');
    expect(r.accepted.sort()).toEqual(m.envelope.to.sort());
  });

  it('a message the contract refuses (no subject) comes back 400: refused, naming the field', async () => {
    const e = await failOf(viaPrism(), simple({ subject: '' }));
    expect(e.kind).toBe('refused');
    expect(e.code).toBe('HTTP 400');
    expect(e.rule).toBe('mailgun-api/bad-request');
  });

  it.each([
    [401, 'misconfigured', 'mailgun-api/forbidden'],
    [429, 'limited', 'mailgun-api/rate-limit'],
    [500, 'unavailable', 'mailgun-api/server-error'],
  ])('HTTP %i forced with Prefer maps to %s', async (code, kind, rule) => {
    const e = await failOf(forced(code), simple());
    expect(e.kind).toBe(kind);
    expect(e.status).toBe(code);
    expect(e.rule).toBe(rule);
  });

  it("the contract's 401 body is the bare string Forbidden: read, and said", async () => {
    const e = await failOf(forced(401), simple());
    expect(e.message).toContain('Forbidden');
    expect(e.message).toContain('other region');
  });

  it('verify() reads the domain (GET /v4/domains/{domain}) and resolves', async () => {
    await expect(viaPrism().verify?.()).resolves.toBeUndefined();
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
      const r = await mailgun({ apiKey: KEY, domain: DOMAIN, baseUrl: 'http://localhost:1', agent }).send(simple());
      expect(r.providerMessageId).toBe('message-id');
      expect(opened).toEqual(['localhost:1']);
    } finally {
      agent.destroy();
    }
  });

  it('a mailer builds the route from its URL and sends through it', async () => {
    const mailer = createMailer({
      factories: [mailgunRoute],
      organisations: () => [`mailgun://${KEY}@${DOMAIN}?region=eu&endpoint=${prism.url}`],
    });
    try {
      const r = await mailer.send(
        { from: `school@${DOMAIN}`, to: 'parent@example.org', subject: 'via url', text: '.' },
        { organisation: 'school-a' },
      );
      expect(r.providerMessageId).toBe('message-id');
      expect(r.route).not.toContain(KEY);
    } finally {
      await mailer.close();
    }
  });
});

describe('mailgun: what Mailgun receives (capturing loopback server)', () => {
  let peer: HttpPeer;
  beforeAll(async () => {
    peer = await startHttpPeer((_ex, res) =>
      reply(res, 200, { id: '<20261122.1.abc@mg.example.org>', message: 'Queued. Thank you.' }),
    );
  });
  afterAll(() => peer.close());

  it('posts the form: sender, recipients, content, attachments, tags, headers and variables', async () => {
    const m = prepareMessage({
      from: { name: 'École A', address: `school@${DOMAIN}` },
      to: ['parent@example.org', 'Zoë <zoe@example.org>'],
      cc: 'teacher@example.org',
      bcc: 'audit@example.org',
      replyTo: 'office@example.org',
      subject: 'Bulletin',
      text: 'Bonjour',
      html: '<p>Bonjour <img src="cid:logo"></p>',
      headers: { 'X-School': 'A' },
      tags: ['bulletin', 'term-1'],
      metadata: { school: 'a' },
      idempotencyKey: 'bulletin-42',
      attachments: [
        { filename: 'report.pdf', content: Buffer.from('%PDF-1.4 fake'), contentType: 'application/pdf' },
        { cid: 'logo', content: Buffer.from([0x89, 0x50, 0x4e, 0x47]), contentType: 'image/png' },
      ],
    });
    const receipt = await mailgun({ apiKey: KEY, domain: DOMAIN, baseUrl: peer.url }).send(m);
    const got = peer.requests.at(-1)!;
    expect(got.method).toBe('POST');
    expect(got.url).toBe(`/v3/${DOMAIN}/messages`);
    expect(got.headers.authorization).toBe(`Basic ${Buffer.from(`api:${KEY}`).toString('base64')}`);
    const form = await new Response(got.body, {
      headers: { 'content-type': String(got.headers['content-type']) },
    }).formData();
    expect(form.get('from')).toBe(`"École A" <school@${DOMAIN}>`);
    expect(form.getAll('to')).toEqual(['parent@example.org', '"Zoë" <zoe@example.org>']);
    expect(form.getAll('cc')).toEqual(['teacher@example.org']);
    expect(form.getAll('bcc')).toEqual(['audit@example.org']);
    expect(form.get('subject')).toBe('Bulletin');
    expect(form.get('text')).toBe('Bonjour');
    expect(form.get('html')).toBe('<p>Bonjour <img src="cid:logo"></p>');
    expect(form.getAll('o:tag')).toEqual(['bulletin', 'term-1']);
    expect(form.get('h:Message-Id')).toBe(m.messageId);
    expect(form.get('h:Reply-To')).toBe('office@example.org');
    expect(form.get('h:X-School')).toBe('A');
    expect(form.get('v:school')).toBe('a');
    expect(form.get(MESSAGE_ID_VARIABLE)).toBe(m.messageId);
    expect(form.get('v:mailvia-idempotency-key')).toBe('bulletin-42');
    const [file] = form.getAll('attachment') as File[];
    expect(file?.name).toBe('report.pdf');
    expect(file?.type).toBe('application/pdf');
    expect(Buffer.from(await file!.arrayBuffer()).toString()).toBe('%PDF-1.4 fake');
    const [logo] = form.getAll('inline') as File[];
    expect(logo?.name).toBe('logo');
    expect(logo?.type).toBe('image/png');
    expect([...new Uint8Array(await logo!.arrayBuffer())]).toEqual([0x89, 0x50, 0x4e, 0x47]);
    expect(receipt.providerMessageId).toBe('<20261122.1.abc@mg.example.org>');
    expect(receipt.messageId).toBe(m.messageId);
  });

  it('does not send a Cc/Bcc-only message (Mailgun needs a To): unavailable, so another route takes it', async () => {
    const before = peer.requests.length;
    const e = await failOf(
      mailgun({ apiKey: KEY, domain: DOMAIN, baseUrl: peer.url }),
      prepareMessage({ from: `school@${DOMAIN}`, bcc: 'a@example.org', subject: 'x', text: '.' }),
    );
    expect(e.kind).toBe('unavailable');
    expect(e.code).toBe('ENOTO');
    expect(peer.requests.length).toBe(before);
  });
});

describe('mailgun failure injection (loopback servers)', () => {
  const answering = async (
    status: number,
    body: unknown,
    headers: Record<string, string> = {},
    over: Partial<MailgunOptions> = {},
  ): Promise<[Transport, HttpPeer]> => {
    const peer = await startHttpPeer((_ex, res) => reply(res, status, body, headers));
    return [mailgun({ apiKey: KEY, domain: DOMAIN, baseUrl: peer.url, ...over }), peer];
  };

  it('a US key on the EU host: 401 plain-text Forbidden is misconfigured (not transient), naming the host', async () => {
    // stands in for api.eu.mailgun.net answering a key of a US account
    const [t, peer] = await answering(401, 'Forbidden', {}, { region: 'eu' });
    try {
      const e = await failOf(t, simple());
      expect(e.kind).toBe('misconfigured');
      expect(e.rule).toBe('mailgun-api/forbidden');
      expect(e.message).toContain('Forbidden');
      expect(e.message).toMatch(/other region/);
    } finally {
      await peer.close();
    }
  });

  it('403 and 404 are misconfigured', async () => {
    const [a, pa] = await answering(403, { message: 'Domain mg.example.org is not allowed to send: sandbox' });
    const [b, pb] = await answering(404, { message: 'Domain not found: mg.example.org' });
    try {
      const ea = await failOf(a, simple());
      expect(ea.kind).toBe('misconfigured');
      expect(ea.message).toContain('not allowed to send');
      const eb = await failOf(b, simple());
      expect(eb.kind).toBe('misconfigured');
      expect(eb.rule).toBe('mailgun-api/domain-not-found');
    } finally {
      await Promise.all([pa.close(), pb.close()]);
    }
  });

  it('400 is refused, with Mailgun’s message', async () => {
    const [t, peer] = await answering(400, {
      message: 'to parameter is not a valid address. please check documentation',
    });
    try {
      const e = await failOf(t, simple());
      expect(e.kind).toBe('refused');
      expect(e.message).toContain('to parameter is not a valid address');
    } finally {
      await peer.close();
    }
  });

  it('429 with Retry-After, or only "try again after N seconds" in the body: limited, with that delay', async () => {
    const [a, pa] = await answering(429, { message: 'too many requests' }, { 'retry-after': '30' });
    const [b, pb] = await answering(429, {
      message:
        'Domain mg.example.org is not allowed to send: account-requests-per-sec limit exceeded, try again after 120 seconds',
    });
    try {
      const ea = await failOf(a, simple());
      expect(ea.kind).toBe('limited');
      expect(ea.retryAfter).toBe(30_000);
      const eb = await failOf(b, simple());
      expect(eb.kind).toBe('limited');
      expect(eb.retryAfter).toBe(120_000);
    } finally {
      await Promise.all([pa.close(), pb.close()]);
    }
  });

  it('502 with an HTML body is unavailable', async () => {
    const [t, peer] = await answering(502, '<html><body>Bad Gateway</body></html>');
    try {
      const e = await failOf(t, simple());
      expect(e.kind).toBe('unavailable');
      expect(e.message).toContain('Bad Gateway');
    } finally {
      await peer.close();
    }
  });

  it('a 200 that is not the messages API (wrong base URL) is misconfigured', async () => {
    const [t, peer] = await answering(200, 'Mailgun Magnificent API');
    try {
      const e = await failOf(t, simple());
      expect(e.kind).toBe('misconfigured');
      expect(e.rule).toBe('mailgun-api/not-the-api');
    } finally {
      await peer.close();
    }
  });

  it('verify() rejects a disabled domain and a refused key', async () => {
    const peer = await startHttpPeer((ex, res) =>
      ex.headers.authorization?.includes(Buffer.from(`api:${KEY}`).toString('base64'))
        ? reply(res, 200, { domain: { name: DOMAIN, state: 'disabled', is_disabled: true } })
        : reply(res, 401, 'Forbidden'),
    );
    try {
      const disabled = await mailgun({ apiKey: KEY, domain: DOMAIN, baseUrl: peer.url })
        .verify?.()
        .catch((e: unknown) => e as MailError);
      expect(disabled?.kind).toBe('misconfigured');
      expect(peer.requests.at(-1)?.url).toBe(`/v4/domains/${DOMAIN}`);
      const refused = await mailgun({ apiKey: 'other-fake-key-zzzz', domain: DOMAIN, baseUrl: peer.url })
        .verify?.()
        .catch((e: unknown) => e as MailError);
      expect(refused?.kind).toBe('misconfigured');
      expect(refused?.message).not.toContain('other-fake-key-zzzz');
    } finally {
      await peer.close();
    }
  });
});

describe('mailgun URLs', () => {
  const registry = new RouteRegistry([mailgunRoute]);
  const context = { outbox: createOutbox(), state: new MemoryRouteState(), stateKey: '' };
  const errorOf = (f: () => unknown): RouteConfigError => {
    try {
      f();
    } catch (e) {
      expect(e).toBeInstanceOf(RouteConfigError);
      expect((e as Error).message).not.toContain(KEY);
      return e as RouteConfigError;
    }
    throw new Error('expected a RouteConfigError');
  };

  it('reads key, domain and region; the name shows the host and a key fingerprint', () => {
    expect(registry.parse(`mailgun://${KEY}@${DOMAIN}?region=eu`)).toEqual({
      type: 'mailgun',
      apiKey: KEY,
      domain: DOMAIN,
      region: 'eu',
    });
    expect(registry.parse(`mailgun://api:${KEY}@${DOMAIN}`)).toEqual({ type: 'mailgun', apiKey: KEY, domain: DOMAIN });
    expect(registry.build(`mailgun://${KEY}@${DOMAIN}?region=eu`, context).name).toMatch(
      /^mailgun:\/\/api\.eu\.mailgun\.net\/mg\.example\.org#key-[0-9a-f]{8}$/,
    );
    expect(registry.build(`mailgun://${KEY}@${DOMAIN}`, context).name).toMatch(/^mailgun:\/\/api\.mailgun\.net\//);
  });

  it('refuses unknown parameters, a bad region, a missing key, and clear text off loopback', () => {
    expect(errorOf(() => registry.parse(`mailgun://${KEY}@${DOMAIN}?regoin=eu`)).part).toBe('query.regoin');
    expect(errorOf(() => registry.parse(`mailgun://${KEY}@${DOMAIN}?region=asia`)).part).toBe('query.region');
    expect(errorOf(() => registry.parse(`mailgun://${DOMAIN}`)).part).toBe('apiKey');
    expect(errorOf(() => registry.parse(`mailgun://${KEY}@${DOMAIN}?endpoint=http://api.mailgun.net`)).part).toBe(
      'query.endpoint',
    );
    expect(errorOf(() => registry.build({ type: 'mailgun', apiKey: KEY, domain: 'not a domain' }, context)).part).toBe(
      'domain',
    );
  });
});
