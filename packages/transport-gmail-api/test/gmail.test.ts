import { randomUUID } from 'node:crypto';
import { Agent, type ClientRequest, type RequestOptions } from 'node:http';
import {
  composeMime,
  createMailer,
  type DeliveryError,
  failover,
  type MailError,
  prepareMessage,
  smtp,
} from '@mailvia/core';
import {
  type FaultProxy,
  httpFailureConformance,
  type Prism,
  type ProxyAction,
  type SmtpSink,
  startCutter,
  startFaultProxy,
  startPrism,
  startSmtpSink,
  transportConformance,
} from '@mailvia/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GmailApiRouteOptions, gmailApi, gmailApiRoute, needsReconsent } from '../src/index.js';
import {
  decodeSend,
  discoveryViolations,
  type GmailSend,
  SWAGGER,
  startGoogleTokenErrors,
  startTokenServer,
  type TokenServer,
} from './peers.js';

const USER = 'school-a@example.org';
const CLIENT_ID = 'fake-client-id.apps.googleusercontent.com';
const CLIENT_SECRET = 'fake-client-secret-aaaa';
const REFRESH = 'fake-refresh-token-bbbb';
const REVOKED = 'fake-revoked-refresh-token-cccc';

let prism: Prism;
let proxy: FaultProxy;
let tokens: TokenServer;
let googleErrors: Awaited<ReturnType<typeof startGoogleTokenErrors>>;
let cutter: Awaited<ReturnType<typeof startCutter>>;
let sink: SmtpSink;
const faults = new Map<string, ProxyAction>();

beforeAll(async () => {
  [prism, tokens, googleErrors, cutter, sink] = await Promise.all([
    startPrism(SWAGGER, { resolveFrom: import.meta.url }),
    startTokenServer(),
    startGoogleTokenErrors({ clientSecret: CLIENT_SECRET, revoked: [REVOKED] }),
    startCutter(),
    startSmtpSink({ starttls: false }),
  ]);
  proxy = await startFaultProxy({
    upstream: prism.url,
    behaviour(req) {
      const m = /^\/f\/([^/]+)(\/.*)$/.exec(req.url);
      if (!m) return { do: 'forward' };
      const action = faults.get(m[1]!) ?? { do: 'answer', status: 599 };
      if (action.do === 'forward' || action.do === 'forward-then-cut') return { ...action, path: m[2]! };
      return action;
    },
  });
});
afterAll(async () => {
  await Promise.allSettled([
    prism.close(),
    proxy.close(),
    tokens.close(),
    googleErrors.close(),
    cutter.close(),
    sink.close(),
  ]);
});

/** A rootUrl whose requests get `action` from the proxy instead of Prism. */
function fault(action: ProxyAction): string {
  const id = randomUUID();
  faults.set(id, action);
  return `${proxy.url}/f/${id}/`;
}

/** An error answer in Google's JSON error format (handle-errors guide). */
function googleError(
  status: number,
  reason: string,
  message: string,
  headers: Record<string, string> = {},
): ProxyAction {
  const statusText: Record<number, string> = {
    400: 'INVALID_ARGUMENT',
    401: 'UNAUTHENTICATED',
    403: 'PERMISSION_DENIED',
    413: 'INVALID_ARGUMENT',
    429: 'RESOURCE_EXHAUSTED',
    500: 'INTERNAL',
    503: 'UNAVAILABLE',
  };
  return {
    do: 'answer',
    status,
    headers,
    body: {
      error: { code: status, message, errors: [{ message, domain: 'global', reason }], status: statusText[status] },
    },
  };
}

const route = (over: Partial<GmailApiRouteOptions> = {}) =>
  gmailApi({
    user: USER,
    oauth2: { clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, refreshToken: REFRESH },
    rootUrl: `${proxy.url}/`,
    tokenUrl: tokens.url,
    ...over,
  });

/** The sends Prism answered with 200, decoded. */
async function delivered(): Promise<GmailSend[]> {
  const out: GmailSend[] = [];
  for (const r of proxy.requests) {
    if (r.status !== 200) continue;
    const d = await decodeSend(r);
    if (d) out.push(d);
  }
  return out;
}

const failing = async (t: ReturnType<typeof route>, subject = `fail ${randomUUID()}`) => {
  const err = await t.send(prepareMessage({ from: USER, to: 'a@example.org', subject, text: '.' })).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'the send should have failed').toBeDefined();
  return err as MailError;
};

transportConformance({
  name: 'gmail-api (Prism, Gmail discovery document)',
  from: USER,
  create: () => route(),
  received: async () =>
    (await delivered()).map((d) => ({
      subject: d.parsed.subject ?? '',
      from: d.parsed.from?.value[0]?.address ?? '',
      to: (Array.isArray(d.parsed.to) ? d.parsed.to : d.parsed.to ? [d.parsed.to] : []).flatMap((a) =>
        a.value.map((v) => v.address ?? ''),
      ),
      text: d.parsed.text ?? '',
    })),
  secrets: [CLIENT_SECRET, REFRESH, REVOKED],
  failures: {
    refused: () => route({ rootUrl: fault(googleError(400, 'invalidArgument', 'Invalid To header')) }),
    limited: () =>
      route({
        rootUrl: fault(googleError(429, 'rateLimitExceeded', 'Rate Limit Exceeded', { 'retry-after': '2' })),
      }),
    misconfigured: () =>
      route({
        tokenUrl: googleErrors.url,
        oauth2: { clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, refreshToken: REVOKED },
      }),
    unavailable: () => route({ rootUrl: `https://127.0.0.1:${cutter.port}/` }),
    unknown: () => route({ rootUrl: fault({ do: 'forward-then-cut' }) }),
  },
});

// refused connection, a cut after the whole request, a silent answer past the timeout, aborts
httpFailureConformance({
  name: 'gmail-api',
  create: (baseUrl, { timeout }) => route({ rootUrl: `${baseUrl}/`, timeout }),
  from: USER,
  secrets: [CLIENT_SECRET, REFRESH],
});

describe('gmail-api route: what Gmail receives', () => {
  const message = () =>
    prepareMessage({
      from: { name: 'École A', address: USER },
      to: ['parent@example.org', 'Zoë <zoe@bücher.example>'],
      cc: 'teacher@example.org',
      bcc: ['audit@example.org', 'archive@example.org'],
      subject: `Bulletin — trimestre 1 ${randomUUID()}`,
      text: 'Bonjour',
      html: '<p>Bonjour</p>',
      headers: { 'X-School': 'A' },
      attachments: [{ filename: 'report.pdf', content: Buffer.from('%PDF-1.4 fake'), contentType: 'application/pdf' }],
    });

  const check = async (d: GmailSend | undefined, m: ReturnType<typeof message>) => {
    expect(d, 'Prism answered the send with 200').toBeDefined();
    const p = d!.parsed;
    expect(d!.userId).toBe('me');
    expect(p.subject).toBe(m.subject);
    expect(p.messageId).toBe(m.messageId);
    expect(p.from?.value[0]).toEqual({ name: 'École A', address: USER });
    expect(p.cc && !Array.isArray(p.cc) ? p.cc.value.map((v) => v.address) : []).toEqual(['teacher@example.org']);
    // Gmail sends to the Bcc header's addresses (and removes the header): it must be there
    expect(p.bcc && !Array.isArray(p.bcc) ? p.bcc.value.map((v) => v.address) : []).toEqual([
      'audit@example.org',
      'archive@example.org',
    ]);
    expect(p.headers.get('x-school')).toBe('A');
    expect(p.text?.trim()).toBe('Bonjour');
    expect(p.html).toContain('<p>Bonjour</p>');
    expect(p.attachments[0]?.filename).toBe('report.pdf');
    expect(p.attachments[0]?.content.toString()).toBe('%PDF-1.4 fake');
    // apart from the Bcc header, the bytes are those of every SMTP route
    const mime = await composeMime(m);
    expect(d!.mime.subarray(d!.mime.length - mime.length).equals(mime)).toBe(true);
    expect(d!.token, 'the access token from the token endpoint').toMatch(/^eyJ/);
  };

  it('media upload (default): the RFC 822 bytes as they are, as message/rfc822, on the upload path', async () => {
    const m = message();
    const receipt = await route().send(m);
    const sends = await delivered();
    const d = sends.find((s) => s.parsed.subject === m.subject);
    await check(d, m);
    expect(d!.form).toBe('upload');
    const rec = proxy.requests.find((r) => r.url.startsWith('/upload/') && r.body.includes(m.messageId))!;
    expect(discoveryViolations(rec)).toEqual([]);
    expect(receipt.providerMessageId).toBeTruthy();
    expect(receipt.accepted.sort()).toEqual(
      [
        'archive@example.org',
        'audit@example.org',
        'parent@example.org',
        'teacher@example.org',
        'zoe@xn--bcher-kva.example',
      ].sort(),
    );
  });

  it('JSON raw below uploadThreshold: base64url as the discovery document defines format byte', async () => {
    // The derived Swagger file turns Google's "byte" (base64url) into OpenAPI's (standard
    // base64), so Prism would refuse most real payloads: this form is checked against the
    // discovery document itself, and answered here instead of by Prism.
    const m = message();
    const rootUrl = fault({
      do: 'answer',
      status: 200,
      body: { id: '18c0ffee', threadId: '18c0ffee', labelIds: ['SENT'] },
    });
    const receipt = await route({ rootUrl, uploadThreshold: 1_000_000 }).send(m);
    const rec = proxy.requests.at(-1)!;
    expect(rec.url).toMatch(/\/gmail\/v1\/users\/me\/messages\/send$/);
    const stripped = { ...rec, url: rec.url.replace(/^\/f\/[^/]+/, '') };
    expect(discoveryViolations(stripped)).toEqual([]);
    const d = await decodeSend(stripped);
    expect(d?.form).toBe('json');
    await check(d && { ...d, parsed: d.parsed }, m);
    expect(receipt.providerMessageId).toBe('18c0ffee');
  });

  it('a mail over the threshold goes through the upload endpoint (6 MB attachment)', async () => {
    const big = Buffer.alloc(6 * 1024 * 1024, 7);
    const m = prepareMessage({
      from: USER,
      to: 'a@example.org',
      subject: `big ${randomUUID()}`,
      text: 'big',
      attachments: [{ filename: 'big.bin', content: big }],
    });
    await route({ uploadThreshold: 5 * 1024 * 1024 }).send(m);
    const d = (await delivered()).find((s) => s.parsed.subject === m.subject);
    expect(d?.form).toBe('upload');
    expect(d?.parsed.attachments[0]?.content.equals(big)).toBe(true);
  });

  it('goes through an injected agent (the SOCKS route hands one in), token requests too, and never destroys it', async () => {
    const seen: string[] = [];
    let destroyed = 0;
    class CountingAgent extends Agent {
      // not in @types/node, but what every ClientRequest calls on its agent
      addRequest(req: ClientRequest, options: RequestOptions) {
        seen.push(String(req.path));
        return (Agent.prototype as any).addRequest.call(this, req, options);
      }
      override destroy() {
        destroyed++;
        super.destroy();
      }
    }
    const agent = new CountingAgent({ keepAlive: true });
    const t = route({ agent });
    await t.send(prepareMessage({ from: USER, to: 'a@example.org', subject: `agent ${randomUUID()}`, text: '.' }));
    await t.close?.();
    expect(seen).toEqual(['/token', '/upload/gmail/v1/users/me/messages/send?uploadType=media']);
    expect(destroyed).toBe(0);
    agent.destroy();
  });

  it('sends no request without a token: Prism refuses one (security of the contract)', async () => {
    const res = await fetch(`${prism.url}/upload/gmail/v1/users/me/messages/send?uploadType=media`, {
      method: 'POST',
      headers: { 'content-type': 'message/rfc822' },
      body: 'From: a@example.org\r\n\r\nx',
    });
    expect(res.status).toBe(401);
  });
});

describe('gmail-api route: failures, classified', () => {
  const cases: [string, ProxyAction, string, boolean][] = [
    ['429 rateLimitExceeded', googleError(429, 'rateLimitExceeded', 'Rate Limit Exceeded'), 'limited', false],
    [
      '403 userRateLimitExceeded',
      googleError(403, 'userRateLimitExceeded', 'User Rate Limit Exceeded'),
      'limited',
      false,
    ],
    ['403 rateLimitExceeded', googleError(403, 'rateLimitExceeded', 'Rate Limit Exceeded'), 'limited', false],
    ['403 dailyLimitExceeded', googleError(403, 'dailyLimitExceeded', 'Daily Limit Exceeded'), 'limited', true],
    [
      '429 Daily user sending limit exceeded',
      googleError(429, 'rateLimitExceeded', 'Daily user sending limit exceeded.'),
      'limited',
      true,
    ],
    [
      '403 insufficientPermissions',
      googleError(403, 'insufficientPermissions', 'Request had insufficient authentication scopes.'),
      'misconfigured',
      false,
    ],
    [
      '403 domainPolicy',
      googleError(403, 'domainPolicy', 'The domain administrators have disabled Gmail apps.'),
      'misconfigured',
      false,
    ],
    [
      '400 failedPrecondition',
      googleError(400, 'failedPrecondition', 'Precondition check failed.'),
      'misconfigured',
      false,
    ],
    ['400 invalidArgument', googleError(400, 'invalidArgument', 'Invalid To header'), 'refused', false],
    ['500 backendError', googleError(500, 'backendError', 'Backend Error'), 'unavailable', false],
    [
      '503 backendError',
      googleError(503, 'backendError', 'The service is currently unavailable.'),
      'unavailable',
      false,
    ],
    ['413 too large', googleError(413, 'uploadTooLarge', 'Request Entity Too Large'), 'unavailable', false],
  ];

  for (const [label, action, kind, quota] of cases) {
    it(`${label} → ${kind}${quota ? ' (quota)' : ''}, one request`, async () => {
      const before = proxy.requests.length;
      const err = await failing(route({ rootUrl: fault(action) }));
      expect(err.kind).toBe(kind);
      expect(err.quota).toBe(quota);
      expect(err.phase).toBe('response');
      expect(err.message).toMatch(/users\.messages\.send answered/);
      expect(proxy.requests.length - before, 'no retry inside the route').toBe(1);
    });
  }

  it('429 with Retry-After: limited, retryAfter in milliseconds', async () => {
    const err = await failing(
      route({ rootUrl: fault(googleError(429, 'rateLimitExceeded', 'Rate Limit Exceeded', { 'Retry-After': '9' })) }),
    );
    expect(err.kind).toBe('limited');
    expect(err.retryAfter).toBe(9000);
    expect(err.code).toBe('HTTP 429 rateLimitExceeded');
  });

  it('429 with X-RateLimit-Reset (epoch seconds): retryAfter until then', async () => {
    const reset = Math.floor(Date.now() / 1000) + 90;
    const err = await failing(
      route({
        rootUrl: fault(
          googleError(429, 'rateLimitExceeded', 'Rate Limit Exceeded', { 'X-RateLimit-Reset': String(reset) }),
        ),
      }),
    );
    expect(err.kind).toBe('limited');
    expect(err.retryAfter).toBeGreaterThan(70_000);
    expect(err.retryAfter).toBeLessThanOrEqual(90_000);
  });

  it('401 authError: the token is renewed once and the send tried once more, then misconfigured', async () => {
    const t = route({ rootUrl: fault(googleError(401, 'authError', 'Invalid Credentials')) });
    const before = { api: proxy.requests.length, token: tokens.requests.length };
    const err = await failing(t);
    expect(err.kind).toBe('misconfigured');
    expect(err.status).toBe(401);
    expect(proxy.requests.length - before.api).toBe(2);
    expect(tokens.requests.length - before.token).toBe(2);
  });

  it('401 on a stale token, then success after the renewal: one send reaches Gmail', async () => {
    let calls = 0;
    const id = randomUUID();
    faults.set(id, { do: 'forward' });
    const stale = proxy.behaviour;
    proxy.behaviour = (req) => {
      if (req.url.startsWith(`/f/${id}/`) && req.body.length > 0 && calls++ === 0) {
        return googleError(401, 'authError', 'Invalid Credentials');
      }
      return stale(req);
    };
    try {
      const m = prepareMessage({ from: USER, to: 'a@example.org', subject: `renewed ${randomUUID()}`, text: '.' });
      const tokensBefore = tokens.requests.length;
      const receipt = await route({ rootUrl: `${proxy.url}/f/${id}/` }).send(m);
      expect(receipt.route).toBe(`gmail-api(${USER})`);
      const sent = proxy.requests.filter((r) => r.body.includes(m.subject));
      expect(sent.map((r) => r.status)).toEqual([401, 200]);
      expect(tokens.requests.length - tokensBefore, 'a first token, then one renewal').toBe(2);
    } finally {
      proxy.behaviour = stale;
    }
  });

  it('a connection cut before the request left (TLS never completed): unavailable, phase connect', async () => {
    const seen = cutter.connections;
    const err = await failing(route({ rootUrl: `https://127.0.0.1:${cutter.port}/` }));
    expect(err.kind).toBe('unavailable');
    expect(err.phase).toBe('connect');
    expect(cutter.connections).toBeGreaterThan(seen);
  });

  it('the request reached Gmail and no answer came: unknown (data-sent); Gmail did get it', async () => {
    const subject = `lost answer ${randomUUID()}`;
    const err = await failing(route({ rootUrl: fault({ do: 'forward-then-cut' }) }), subject);
    expect(err.kind).toBe('unknown');
    expect(err.phase).toBe('data-sent');
    const reached = proxy.forwarded.find((r) => r.body.includes(subject));
    expect(reached, 'Prism received the send').toBeDefined();
    expect(reached!.upstreamStatus).toBe(200);
    expect(reached!.status, 'the route got no answer').toBeUndefined();
  });

  it('the token endpoint unreachable: unavailable, phase auth, nothing sent', async () => {
    const before = proxy.requests.length;
    const err = await failing(route({ tokenUrl: `https://127.0.0.1:${cutter.port}/token` }));
    expect(err.kind).toBe('unavailable');
    expect(err.phase).toBe('auth');
    expect(proxy.requests.length).toBe(before);
  });

  it('invalid_grant: misconfigured with code invalid_grant, says consent is needed, shows no secret', async () => {
    const before = proxy.requests.length;
    const t = route({
      tokenUrl: googleErrors.url,
      oauth2: { clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, refreshToken: REVOKED },
    });
    const err = await failing(t);
    expect(err.kind).toBe('misconfigured');
    expect(err.phase).toBe('auth');
    expect(err.code).toBe('invalid_grant');
    expect(err.rule).toBe('google-oauth/invalid-grant');
    expect(err.message).toMatch(/Token has been expired or revoked/);
    expect(err.message).toMatch(/consent|grant access again/);
    expect(needsReconsent(err)).toBe(true);
    expect(proxy.requests.length, 'nothing reached the API').toBe(before);
    for (const text of [err.message, JSON.stringify(err), t.name]) {
      for (const s of [CLIENT_SECRET, REVOKED]) expect(text).not.toContain(s);
    }
    const form = googleErrors.requests.at(-1)!;
    expect(form).toEqual({
      grant_type: 'refresh_token',
      refresh_token: REVOKED,
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
    });
  });

  it('invalid_client (wrong client secret): misconfigured, code invalid_client, not a re-consent', async () => {
    const err = await failing(
      route({
        tokenUrl: googleErrors.url,
        oauth2: { clientId: CLIENT_ID, clientSecret: 'fake-wrong-secret-dddd', refreshToken: REFRESH },
      }),
    );
    expect(err.kind).toBe('misconfigured');
    expect(err.code).toBe('invalid_client');
    expect(needsReconsent(err)).toBe(false);
    expect(err.message).not.toContain('fake-wrong-secret-dddd');
  });
});

describe('gmail-api route in a failover chain', () => {
  const backup = () => smtp({ host: '127.0.0.1', port: sink.port, pool: false, name: 'backup-smtp' });
  const msg = () => prepareMessage({ from: USER, to: 'a@example.org', subject: `chain ${randomUUID()}`, text: '.' });

  it('Gmail unreachable: the next route sends it, the receipt lists both attempts', async () => {
    const m = msg();
    const chain = failover([route({ rootUrl: `https://127.0.0.1:${cutter.port}/` }), backup()]);
    const receipt = await chain.send(m);
    expect(receipt.route).toBe('backup-smtp');
    expect(receipt.attempts.map((a) => [a.route, a.ok, a.kind])).toEqual([
      [`gmail-api(${USER})`, false, 'unavailable'],
      ['backup-smtp', true, undefined],
    ]);
    expect(sink.received.some((r) => r.parsed.subject === m.subject)).toBe(true);
  });

  it('a revoked grant falls over too, and the application can tell the account needs consent', async () => {
    const m = msg();
    const chain = failover([
      route({
        tokenUrl: googleErrors.url,
        oauth2: { clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, refreshToken: REVOKED },
      }),
      backup(),
    ]);
    const receipt = await chain.send(m);
    expect(receipt.route).toBe('backup-smtp');
    expect(receipt.attempts[0]).toMatchObject({ kind: 'misconfigured', code: 'invalid_grant' });
  });

  it('an unknown outcome on Gmail stops the chain: the next route never gets the mail', async () => {
    const m = msg();
    const chain = failover([route({ rootUrl: fault({ do: 'forward-then-cut' }) }), backup()]);
    const err = (await chain.send(m).catch((e: unknown) => e)) as DeliveryError;
    expect(err.kind).toBe('unknown');
    expect(err.attempts.map((a) => a.kind)).toEqual(['unknown']);
    expect(sink.received.some((r) => r.parsed.subject === m.subject)).toBe(false);
    expect(
      proxy.forwarded.some((r) => r.body.includes(m.subject)),
      'Gmail had it',
    ).toBe(true);
  });

  it('works from a URL through createMailer with the gmail+api factory', async () => {
    const q = new URLSearchParams({
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      refreshToken: REFRESH,
      rootUrl: `${proxy.url}/`,
      tokenUrl: tokens.url,
    });
    const mailer = createMailer({
      factories: [gmailApiRoute],
      organisations: () => [`gmail+api://school-a@example.org?${q}`, `smtp://127.0.0.1:${sink.port}`],
    });
    try {
      const subject = `mailer ${randomUUID()}`;
      const receipt = await mailer.send({ from: USER, to: 'a@example.org', subject, text: '.' }, { organisation: 'a' });
      expect(receipt.route).toBe(`gmail-api(${USER})`);
      expect((await delivered()).some((d) => d.parsed.subject === subject)).toBe(true);
    } finally {
      await mailer.close();
    }
  });
});

describe('gmail-api route: requests match the discovery document', () => {
  it('the checker finds violations (so a clean result means something)', () => {
    const base = { method: 'POST', headers: { authorization: 'Bearer x', 'content-type': 'application/json' } };
    expect(
      discoveryViolations({ ...base, url: '/gmail/v1/users/me/messages/send', body: Buffer.from('{"raw":"a+b/"}') }),
    ).toEqual(['raw is not padded base64url (discovery format byte)']);
    expect(
      discoveryViolations({
        ...base,
        url: '/upload/gmail/v1/users/me/messages/send?uploadType=multipart',
        headers: { authorization: 'Bearer x', 'content-type': 'text/plain' },
        body: Buffer.from('x'),
      }),
    ).toHaveLength(2);
  });

  it('every send of this file that Prism saw conforms', () => {
    const sends = proxy.forwarded.filter((r) => /\/messages\/send/.test(r.url));
    expect(sends.length).toBeGreaterThan(5);
    for (const r of sends) {
      expect(discoveryViolations({ ...r, url: r.url.replace(/^\/f\/[^/]+/, '') }), r.url).toEqual([]);
    }
  });
});
