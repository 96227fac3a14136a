import { randomUUID } from 'node:crypto';
import { Agent } from 'node:http';
import {
  composeMime,
  createMailer,
  createOutbox,
  type DeliveryError,
  failover,
  type MailError,
  MemoryRouteState,
  prepareMessage,
  RouteRegistry,
  smtp,
} from '@mailvia/core';
import {
  httpFailureConformance,
  type SmtpSink,
  startCutter,
  startSmtpSink,
  transportConformance,
} from '@mailvia/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SesRouteOptions, ses, sesRoute } from '../src/index.js';
import { account, type SesPeer, sesError, startSesPeer } from './ses-peer.js';
import { httpBinding, operationErrors, validateRequest } from './smithy.js';

const KEY_ID = 'AKIAFAKEKEY0000TEST';
// a secret with the characters AWS secrets contain (/ and +), obviously fake
const SECRET = 'fake/secret+access-key-aaaa';
const FROM = 'sender@example.org';

let peer: SesPeer;
let cutter: Awaited<ReturnType<typeof startCutter>>;

beforeAll(async () => {
  peer = await startSesPeer();
  cutter = await startCutter();
});
afterAll(async () => {
  await peer.close();
  await cutter.close();
});

const route = (over: Partial<SesRouteOptions> = {}) =>
  ses({
    region: 'us-east-1',
    endpoint: peer.endpoint,
    credentials: { accessKeyId: KEY_ID, secretAccessKey: SECRET },
    ...over,
  });

const failing = async (
  over: Partial<SesRouteOptions>,
  m = prepareMessage({ from: FROM, to: 'a@example.org', subject: 'x', text: 'y' }),
) => {
  const err = await route(over)
    .send(m)
    .then(
      () => undefined,
      (e: unknown) => e,
    );
  expect(err, 'the send should have failed').toBeDefined();
  return err as MailError;
};

/** SendEmail bodies the proxy saw, parsed. */
const sendEmailBodies = () =>
  peer.proxy.requests
    .filter((r) => r.url.endsWith('/v2/email/outbound-emails'))
    .map((r) => JSON.parse(r.body.toString('utf8')) as Record<string, unknown>);

transportConformance({
  name: 'ses (aws-ses-v2-local)',
  create: () => route(),
  received: () => peer.received(),
  secrets: [SECRET],
  failures: {
    refused: () => route({ endpoint: peer.fault(sesError('MessageRejected', 'Illegal address')) }),
    limited: () =>
      route({
        endpoint: peer.fault(
          sesError('TooManyRequestsException', 'Maximum sending rate exceeded.', { headers: { 'retry-after': '3' } }),
        ),
      }),
    misconfigured: () =>
      route({
        endpoint: peer.fault(
          sesError('MailFromDomainNotVerifiedException', 'Domain example.org is not verified for MAIL FROM'),
        ),
      }),
    unavailable: () => route({ endpoint: `https://127.0.0.1:${cutter.port}` }),
    unknown: () => route({ endpoint: peer.fault({ do: 'forward-then-cut' }) }),
  },
});

// refused connection, a cut after the whole request, a silent answer past the timeout, aborts
httpFailureConformance({
  name: 'ses',
  create: (endpoint, { timeout }) => route({ endpoint, timeout }),
  from: FROM,
  secrets: [SECRET],
});

describe('ses route: what SES receives', () => {
  it('sends the same MIME bytes as the SMTP routes, with every recipient in Destination', async () => {
    const m = prepareMessage({
      from: { name: 'École A', address: FROM },
      to: ['parent@example.org', 'Zoë <zoe@bücher.example>'],
      cc: 'teacher@example.org',
      bcc: 'audit@example.org',
      subject: 'Bulletin — trimestre 1',
      text: 'Bonjour',
      html: '<p>Bonjour</p>',
      headers: { 'X-School': 'A' },
      attachments: [{ filename: 'report.pdf', content: Buffer.from('%PDF-1.4 fake'), contentType: 'application/pdf' }],
    });
    const receipt = await route().send(m);
    const stored = (await peer.stored()).find((e) => e.messageId === receipt.providerMessageId);
    expect(stored, 'the emulator stored the mail under the MessageId of the receipt').toBeDefined();
    expect(stored!.from).toContain(FROM);
    expect(stored!.subject).toBe('Bulletin — trimestre 1');
    expect(stored!.body.text?.trim()).toBe('Bonjour');
    expect(stored!.body.html).toContain('<p>Bonjour</p>');
    expect(stored!.attachments[0]?.filename).toBe('report.pdf');
    expect(Buffer.from(stored!.attachments[0]!.content, 'base64').toString()).toBe('%PDF-1.4 fake');

    const body = sendEmailBodies().at(-1)!;
    const raw = Buffer.from((body.Content as { Raw: { Data: string } }).Raw.Data, 'base64');
    expect(raw.equals(await composeMime(m)), 'Content.Raw.Data is composeMime(message), byte for byte').toBe(true);
    expect(raw.toString()).not.toMatch(/^Bcc:/im);
    expect(body.FromEmailAddress).toBe(FROM);
    expect(body.Destination).toEqual({
      ToAddresses: ['parent@example.org', 'zoe@xn--bcher-kva.example'],
      CcAddresses: ['teacher@example.org'],
      BccAddresses: ['audit@example.org'],
    });
    expect(receipt.accepted.sort()).toEqual(
      ['audit@example.org', 'parent@example.org', 'teacher@example.org', 'zoe@xn--bcher-kva.example'].sort(),
    );
    expect(receipt.providerMessageId).toMatch(/^ses-/);
  });

  it('sends the configuration set and the tags and metadata as EmailTags, sanitised to what SES allows', async () => {
    const m = prepareMessage({
      from: FROM,
      to: 'a@example.org',
      subject: 'tagged',
      text: '.',
      tags: ['newsletter', 'été 2026', 'a.b'],
      metadata: { 'order-id': '#123/45', tenant: 'school_a' },
    });
    await route({ configurationSet: 'transactional-set' }).send(m);
    const body = sendEmailBodies().at(-1)!;
    expect(body.ConfigurationSetName).toBe('transactional-set');
    expect(body.EmailTags).toEqual([
      { Name: 'newsletter', Value: 'true' },
      { Name: 'ete_2026', Value: 'true' },
      { Name: 'a_b', Value: 'true' },
      { Name: 'order-id', Value: '_123_45' },
      { Name: 'tenant', Value: 'school_a' },
    ]);
    for (const tag of body.EmailTags as { Name: string; Value: string }[]) {
      expect(tag.Name).toMatch(/^[A-Za-z0-9_-]{1,256}$/);
      expect(tag.Value).toMatch(/^[A-Za-z0-9_-]{1,256}$/);
    }
  });

  it('simple content: SES assembles subject, bodies, sender and reply-to', async () => {
    const m = prepareMessage({
      from: { name: 'Zoë', address: FROM },
      to: 'a@example.org',
      replyTo: 'office@example.org',
      subject: 'Simple — ünïcode',
      text: 'plain body',
      html: '<b>html body</b>',
      headers: { 'X-Campaign': 'c1' },
    });
    const receipt = await route({ content: 'simple' }).send(m);
    const stored = (await peer.stored()).find((e) => e.messageId === receipt.providerMessageId)!;
    expect(stored.subject).toBe('Simple — ünïcode');
    expect(stored.body).toEqual({ text: 'plain body', html: '<b>html body</b>' });
    expect(stored.replyTo).toEqual(['office@example.org']);
    expect(stored.headers).toEqual([{ name: 'X-Campaign', value: 'c1' }]);
    const body = sendEmailBodies().at(-1)!;
    expect(body.FromEmailAddress).toBe(`=?UTF-8?B?${Buffer.from('Zoë').toString('base64')}?= <${FROM}>`);
    expect(body.Content).toHaveProperty('Simple');
  });

  it('simple content still sends a message with attachments raw (the model has no Simple attachments)', async () => {
    const m = prepareMessage({
      from: FROM,
      to: 'a@example.org',
      subject: 'simple with attachment',
      text: '.',
      attachments: [{ filename: 'a.txt', content: 'hello' }],
    });
    const receipt = await route({ content: 'simple' }).send(m);
    const stored = (await peer.stored()).find((e) => e.messageId === receipt.providerMessageId)!;
    expect(stored.attachments[0]?.filename).toBe('a.txt');
    expect(sendEmailBodies().at(-1)!.Content).toHaveProperty('Raw');
  });

  it('goes through an injected agent (the SOCKS route hands one in) and never destroys it', async () => {
    let connections = 0;
    let destroyed = 0;
    class CountingAgent extends Agent {
      override createConnection(...args: Parameters<Agent['createConnection']>) {
        connections++;
        return super.createConnection(...args);
      }
      override destroy() {
        destroyed++;
        super.destroy();
      }
    }
    const agent = new CountingAgent({ keepAlive: true });
    const t = route({ agent });
    await t.send(prepareMessage({ from: FROM, to: 'a@example.org', subject: 'agent 1', text: '.' }));
    await t.close?.();
    expect(connections).toBeGreaterThan(0);
    expect(destroyed, "close() left the caller's agent alone").toBe(0);
    await t.send(prepareMessage({ from: FROM, to: 'a@example.org', subject: 'agent 2', text: '.' }));
    agent.destroy();
  });
});

describe('ses route: failures, classified', () => {
  const m = () => prepareMessage({ from: FROM, to: 'a@example.org', subject: `fail ${Math.random()}`, text: '.' });

  const cases: [string, string, number | undefined, string, boolean][] = [
    ['TooManyRequestsException', 'Maximum sending rate exceeded.', undefined, 'limited', false],
    ['TooManyRequestsException', 'Daily message quota exceeded.', undefined, 'limited', true],
    ['LimitExceededException', 'Daily message quota exceeded.', undefined, 'limited', true],
    ['ThrottlingException', 'Maximum sending rate exceeded.', 400, 'limited', false],
    ['MessageRejected', 'Illegal address', undefined, 'refused', false],
    [
      'MessageRejected',
      'Email address is not verified. The following identities failed the check in region US-EAST-1: a@example.org',
      undefined,
      'misconfigured',
      false,
    ],
    ['MailFromDomainNotVerifiedException', 'MAIL FROM domain not verified', undefined, 'misconfigured', false],
    ['SendingPausedException', 'Sending is paused for this account.', undefined, 'misconfigured', false],
    ['AccountSuspendedException', 'Account suspended.', undefined, 'misconfigured', false],
    ['NotFoundException', 'Configuration set <x> does not exist.', undefined, 'misconfigured', false],
    ['LimitExceededException', 'Too many configuration sets.', undefined, 'misconfigured', false],
    ['BadRequestException', 'Invalid email address.', undefined, 'refused', false],
    [
      'UnrecognizedClientException',
      'The security token included in the request is invalid.',
      403,
      'misconfigured',
      false,
    ],
    ['InvalidSignatureException', 'The request signature we calculated does not match', 403, 'misconfigured', false],
    ['AccessDeniedException', 'not authorized to perform: ses:SendEmail', 403, 'misconfigured', false],
    ['InternalFailure', 'We encountered an internal error.', 500, 'unavailable', false],
    ['ServiceUnavailable', 'Service unavailable.', 503, 'unavailable', false],
  ];

  it('covers every error the model lists for SendEmail', () => {
    const covered = new Set(cases.map((c) => c[0]));
    for (const e of operationErrors('SendEmail')) expect(covered, `${e} has a case`).toContain(e);
  });

  for (const [name, text, status, kind, quota] of cases) {
    it(`${name} "${text.slice(0, 40)}" → ${kind}${quota ? ' (quota)' : ''}`, async () => {
      const before = peer.proxy.requests.length;
      const err = await failing({ endpoint: peer.fault(sesError(name, text, status ? { status } : {})) }, m());
      expect(err.kind).toBe(kind);
      expect(err.quota).toBe(quota);
      expect(err.phase).toBe('response');
      expect(err.code).toContain(name);
      expect(err.message).toContain(text.slice(0, 20));
      expect(err.message).not.toContain(SECRET);
      // one attempt: the SDK does not retry, decisions are the engine's
      expect(peer.proxy.requests.length - before).toBe(1);
    });
  }

  it('429 with Retry-After: limited, retryAfter in milliseconds', async () => {
    const err = await failing({
      endpoint: peer.fault(
        sesError('TooManyRequestsException', 'Maximum sending rate exceeded.', { headers: { 'Retry-After': '7' } }),
      ),
    });
    expect(err.kind).toBe('limited');
    expect(err.retryAfter).toBe(7000);
    expect(err.status).toBe(429);
  });

  it('429 with X-RateLimit-Reset (epoch seconds): retryAfter until then', async () => {
    const reset = Math.floor(Date.now() / 1000) + 120;
    const err = await failing({
      endpoint: peer.fault(
        sesError('TooManyRequestsException', 'Maximum sending rate exceeded.', {
          headers: { 'X-RateLimit-Reset': String(reset) },
        }),
      ),
    });
    expect(err.kind).toBe('limited');
    expect(err.retryAfter).toBeGreaterThan(100_000);
    expect(err.retryAfter).toBeLessThanOrEqual(120_000);
  });

  it('a credentials provider that fails: misconfigured, phase auth, no request made', async () => {
    const before = peer.proxy.requests.length;
    const err = await failing({
      credentials: async () => {
        throw new Error('no role attached to this instance');
      },
    });
    expect(err.kind).toBe('misconfigured');
    expect(err.phase).toBe('auth');
    expect(err.message).toContain('no role attached');
    expect(peer.proxy.requests.length).toBe(before);
  });

  it('a connection cut before the request left (TLS never completed): unavailable, nothing reached SES', async () => {
    const before = (await peer.stored()).length;
    const seen = cutter.connections;
    const err = await failing({ endpoint: `https://127.0.0.1:${cutter.port}` });
    expect(err.kind).toBe('unavailable');
    expect(err.phase).toBe('connect');
    expect(cutter.connections).toBeGreaterThan(seen);
    expect((await peer.stored()).length).toBe(before);
  });

  it('the request reached SES and the answer never came: unknown (data-sent), and SES did take it', async () => {
    const msg = prepareMessage({ from: FROM, to: 'a@example.org', subject: `lost answer ${Date.now()}`, text: '.' });
    const err = await failing({ endpoint: peer.fault({ do: 'forward-then-cut' }) }, msg);
    expect(err.kind).toBe('unknown');
    expect(err.phase).toBe('data-sent');
    expect((await peer.stored()).some((e) => e.subject === msg.subject)).toBe(true);
  });

  it('wrong credentials never show the secret, in the message, the JSON or the name', async () => {
    const t = route({
      endpoint: peer.fault(sesError('InvalidSignatureException', `bad signature for ${SECRET}`, { status: 403 })),
    });
    const err = (await t.send(m()).catch((e: unknown) => e)) as MailError;
    expect(err.kind).toBe('misconfigured');
    for (const text of [err.message, JSON.stringify(err), t.name]) expect(text).not.toContain(SECRET);
  });
});

describe('ses route: verify()', () => {
  it('fails as misconfigured when GetAccount says sending is disabled', async () => {
    const saved = process.env.AWS_SES_ACCOUNT;
    process.env.AWS_SES_ACCOUNT = account(false);
    try {
      const err = await route()
        .verify?.()
        .then(
          () => undefined,
          (e: unknown) => e as MailError,
        );
      expect(err?.kind).toBe('misconfigured');
      expect(err?.message).toMatch(/paused/);
    } finally {
      process.env.AWS_SES_ACCOUNT = saved;
    }
  });
});

describe('ses route: requests match the SES v2 Smithy model', () => {
  it('the checker finds violations (so a clean result means something)', () => {
    expect(validateRequest('SendEmail', {})).toContain('SendEmail.Content: required member missing');
    expect(validateRequest('SendEmail', { Content: { Raw: {} }, Bogus: 1 }).join('\n')).toMatch(
      /Bogus: not a member[\s\S]*Raw.Data: required member missing/,
    );
    expect(validateRequest('SendEmail', { Content: { Raw: { Data: 'not base64!' } } })).toHaveLength(1);
  });

  it('every SendEmail request sent in this file conforms, on the bound method and path', () => {
    const binding = httpBinding('SendEmail');
    const sends = peer.proxy.requests.filter((r) => r.url.endsWith(binding.uri));
    expect(sends.length).toBeGreaterThan(10);
    for (const r of sends) {
      expect(r.method).toBe(binding.method);
      expect(r.headers['content-type']).toBe('application/json');
      expect(r.headers.authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIAFAKEKEY0000TEST\//);
      expect(r.headers.authorization).not.toContain(SECRET);
      const violations = validateRequest('SendEmail', JSON.parse(r.body.toString('utf8')));
      expect(violations, r.body.toString('utf8').slice(0, 200)).toEqual([]);
    }
    const account = peer.proxy.requests.filter((r) => r.url.endsWith(httpBinding('GetAccount').uri));
    expect(account.length).toBeGreaterThan(0);
    for (const r of account) expect(r.method).toBe(httpBinding('GetAccount').method);
  });
});

describe('ses route in a failover chain', () => {
  let sink: SmtpSink;
  beforeAll(async () => {
    sink = await startSmtpSink({ starttls: false });
  });
  afterAll(() => sink.close());
  const backup = () => smtp({ host: '127.0.0.1', port: sink.port, pool: false, name: 'backup-smtp' });
  const msg = () => prepareMessage({ from: FROM, to: 'a@example.org', subject: `chain ${randomUUID()}`, text: '.' });

  it('SES unreachable: the next route sends it, the receipt lists both attempts', async () => {
    const m = msg();
    const receipt = await failover([route({ endpoint: `https://127.0.0.1:${cutter.port}` }), backup()]).send(m);
    expect(receipt.route).toBe('backup-smtp');
    expect(receipt.attempts.map((a) => [a.route, a.ok, a.kind])).toEqual([
      ['ses(us-east-1/…TEST)', false, 'unavailable'],
      ['backup-smtp', true, undefined],
    ]);
    expect(sink.received.some((r) => r.parsed.subject === m.subject)).toBe(true);
  });

  it('SES out of its daily quota: the next route sends it and SES rests as limited', async () => {
    const rested: { kind: string; quota: boolean }[] = [];
    const chain = failover([
      route({ endpoint: peer.fault(sesError('TooManyRequestsException', 'Daily message quota exceeded.')) }),
      backup(),
    ]);
    const receipt = await chain.send(msg(), {
      observer: { rested: (_route, _until, e) => rested.push({ kind: e.kind, quota: e.quota }) },
    });
    expect(receipt.route).toBe('backup-smtp');
    expect(rested).toEqual([{ kind: 'limited', quota: true }]);
  });

  it('an unknown outcome on SES stops the chain: the next route never gets the mail, SES has it', async () => {
    const m = msg();
    const chain = failover([route({ endpoint: peer.fault({ do: 'forward-then-cut' }) }), backup()]);
    const err = (await chain.send(m).catch((e: unknown) => e)) as DeliveryError;
    expect(err.kind).toBe('unknown');
    expect(err.attempts.map((a) => a.kind)).toEqual(['unknown']);
    expect(sink.received.some((r) => r.parsed.subject === m.subject)).toBe(false);
    expect((await peer.stored()).some((e) => e.subject === m.subject)).toBe(true);
  });
});

describe('ses:// URLs', () => {
  const registry = new RouteRegistry([sesRoute]);
  const context = { outbox: createOutbox(), state: new MemoryRouteState(), stateKey: 'test:' };
  const encoded = encodeURIComponent(SECRET);

  it('builds a route from a URL (secret percent-encoded) and sends through createMailer', async () => {
    const url = `ses://${KEY_ID}:${encoded}@us-east-1?configurationSet=set-1&endpoint=${encodeURIComponent(peer.endpoint)}`;
    expect(sesRoute.fromUrl(new URL(url))).toEqual({
      type: 'ses',
      region: 'us-east-1',
      credentials: { accessKeyId: KEY_ID, secretAccessKey: SECRET },
      configurationSet: 'set-1',
      endpoint: peer.endpoint,
    });
    const mailer = createMailer({ factories: [sesRoute], organisations: () => [url] });
    try {
      const subject = `mailer ${randomUUID()}`;
      const receipt = await mailer.send({ from: FROM, to: 'a@example.org', subject, text: '.' }, { organisation: 'a' });
      expect(receipt.route).toBe('ses(us-east-1/…TEST set=set-1)');
      expect((await peer.stored()).some((e) => e.subject === subject)).toBe(true);
      expect(sendEmailBodies().at(-1)?.ConfigurationSetName).toBe('set-1');
    } finally {
      await mailer.close();
    }
  });

  it('takes the region as a query parameter with host default', () => {
    expect(sesRoute.fromUrl(new URL('ses://default?region=eu-west-1&content=simple&emailTags=false'))).toEqual({
      type: 'ses',
      region: 'eu-west-1',
      content: 'simple',
      emailTags: false,
    });
  });

  it('says what is wrong with a URL without showing the secret', () => {
    const bad: [string, RegExp][] = [
      [`ses://${KEY_ID}:${encoded}@us-east-1?colour=blue`, /query\.colour: unknown parameter/],
      [`ses://${KEY_ID}:${encoded}@default`, /region: is missing/],
      [`ses://${KEY_ID}:${encoded}@moon-base-1`, /not an AWS region/],
      [`ses://${KEY_ID}:${encoded}@us-east-1?content=fancy`, /query\.content/],
      [`ses://${KEY_ID}:${encoded}@us-east-1?timeout=soon`, /query\.timeout/],
      [`ses://${KEY_ID}@us-east-1`, /credentials: need both/],
    ];
    for (const [url, problem] of bad) {
      let err: Error | undefined;
      try {
        registry.build(url, context);
      } catch (e) {
        err = e as Error;
      }
      expect(err?.name, url).toBe('RouteConfigError');
      expect(err?.message).toMatch(problem);
      expect(err?.message).not.toContain(SECRET);
      expect(err?.message).not.toContain(encoded);
    }
  });
});
