// The four HTTPS API routes of issue 5 in ONE failover chain, built by createMailer from route
// URLs and route objects: SendGrid (Prism serving tsg_mail_v3.json), SES (aws-ses-v2-local),
// Mailgun (Prism serving the relaxed Mailgun OpenAPI), Gmail (Prism serving the Swagger 2.0 form
// of the discovery document, tokens from oauth2-mock-server). Each Prism sits behind a recording
// fault proxy of core, so the test reads what each provider got (sender, recipient, subject) and
// what it answered. The sibling routes come from their packages (devDependencies); the SES peer,
// which its package does not export, from its test folder.
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { type Attempt, createMailer, DeliveryError, type Mailer, type RouteSpec } from '@mailvia/core';
import {
  type FaultProxy,
  type Prism,
  type ProxyAction,
  type RecordedRequest,
  refusedPort,
  startCutter,
  startFaultProxy,
  startPrism,
} from '@mailvia/core/testing';
import { mailgunRoute } from '@mailvia/transport-mailgun';
import { sendgridApiRoute } from '@mailvia/transport-sendgrid';
import { sesRoute } from '@mailvia/transport-ses';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addresses, type SesPeer, sesError, startSesPeer } from '../../transport-ses/test/ses-peer.js';
import { gmailApiRoute } from '../src/index.js';
import { decodeSend, startTokenServer, type TokenServer } from './peers.js';

const CONTRACTS = join(import.meta.dirname, '../../../../shared/contracts');
const SENDGRID_SPEC = join(CONTRACTS, 'sendgrid/tsg_mail_v3.json');
const MAILGUN_SPEC = join(CONTRACTS, 'mailgun/mailgun-openapi.prism-relaxed.yaml');
const GMAIL_SPEC = join(CONTRACTS, 'gmail/gmail.v1.prism-swagger2.json');

const FROM = 'school-a@example.org';
const TO = 'parent@example.org';
// obviously fake credentials, one per provider
const SG_KEY = 'SG.fake-all-apis-key-aaaaaaaaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb';
const SES_KEY_ID = 'AKIAFAKEKEY0000ALLA';
const SES_SECRET = 'fake/ses+secret-all-apis-cccc';
const MG_KEY = 'fake-mailgun-all-apis-key-dddddddddddddddd';
const MG_DOMAIN = 'mg.example.org';
const CLIENT_ID = 'fake-client-id.apps.googleusercontent.com';
const CLIENT_SECRET = 'fake-client-secret-all-apis-eeee';
const REFRESH = 'fake-refresh-token-all-apis-ffff';
const SECRETS = [SG_KEY, SES_SECRET, MG_KEY, CLIENT_SECRET, REFRESH];

/** A recording fault proxy in front of a Prism; `fault(action)` gives a base URL whose requests get `action`. */
interface Recorder {
  proxy: FaultProxy;
  fault(action: ProxyAction): string;
}

async function recorder(upstream: string): Promise<Recorder> {
  const faults = new Map<string, ProxyAction>();
  const proxy = await startFaultProxy({
    upstream,
    behaviour(req) {
      const m = /^\/f\/([^/]+)(\/.*)$/.exec(req.url);
      if (!m) return { do: 'forward' };
      const action = faults.get(m[1]!) ?? { do: 'answer', status: 599 };
      if (action.do === 'forward' || action.do === 'forward-then-cut') return { ...action, path: m[2]! };
      return action;
    },
  });
  return {
    proxy,
    fault(action) {
      const id = randomUUID();
      faults.set(id, action);
      return `${proxy.url}/f/${id}`;
    },
  };
}

let sgPrism: Prism;
let mgPrism: Prism;
let gmPrism: Prism;
let sg: Recorder;
let mg: Recorder;
let gm: Recorder;
let sesPeer: SesPeer;
let tokens: TokenServer;
let cutter: Awaited<ReturnType<typeof startCutter>>;
let deadPort: number;
let mailer: Mailer;
/** The chain of each organisation: one per test, so a route resting after one test does not skip in the next. */
const chains = new Map<string, RouteSpec>();

beforeAll(async () => {
  [sgPrism, mgPrism, gmPrism, sesPeer, tokens, cutter, deadPort] = await Promise.all([
    startPrism(SENDGRID_SPEC, { resolveFrom: import.meta.url }),
    startPrism(MAILGUN_SPEC, { resolveFrom: import.meta.url }),
    startPrism(GMAIL_SPEC, { resolveFrom: import.meta.url }),
    startSesPeer(),
    startTokenServer(),
    startCutter(),
    refusedPort(),
  ]);
  [sg, mg, gm] = await Promise.all([recorder(sgPrism.url), recorder(mgPrism.url), recorder(gmPrism.url)]);
  mailer = createMailer({
    factories: [sendgridApiRoute, sesRoute, mailgunRoute, gmailApiRoute],
    organisations: (id) => chains.get(id),
  });
}, 120_000);

afterAll(async () => {
  await mailer?.close();
  await Promise.allSettled(
    [sg?.proxy, mg?.proxy, gm?.proxy, sgPrism, mgPrism, gmPrism, sesPeer, tokens, cutter].map((s) => s?.close()),
  );
});

// --- the four routes, healthy (URLs) or forced to fail

const param = (v: string) => encodeURIComponent(v);

const sendgridUrl = (endpoint: string) => `sendgrid+api://${SG_KEY}@default?endpoint=${param(endpoint)}&name=sendgrid`;
/** SendGrid's contract server answering `status` (Prism's `Prefer: code=…`, a header the route passes on). */
const sendgridForced = (status: number): RouteSpec => ({
  type: 'sendgrid+api',
  apiKey: SG_KEY,
  baseUrl: sg.proxy.url,
  headers: { Prefer: `code=${status}` },
  name: 'sendgrid',
});

const sesUrl = (endpoint: string) =>
  `ses://${SES_KEY_ID}:${param(SES_SECRET)}@us-east-1?endpoint=${param(endpoint)}&name=ses`;
const sesThrottled = () =>
  sesUrl(sesPeer.fault(sesError('TooManyRequestsException', 'Maximum sending rate exceeded.')));

const mailgunUrl = (endpoint: string) => `mailgun://${MG_KEY}@${MG_DOMAIN}?endpoint=${param(endpoint)}&name=mailgun`;
const mailgunForced = (status: number): RouteSpec => ({
  type: 'mailgun',
  apiKey: MG_KEY,
  domain: MG_DOMAIN,
  baseUrl: mg.proxy.url,
  headers: { Prefer: `code=${status}` },
  name: 'mailgun',
});

const gmailUrl = (rootUrl: string) =>
  `gmail+api://${FROM}?${new URLSearchParams({
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    refreshToken: REFRESH,
    rootUrl: `${rootUrl}/`,
    tokenUrl: tokens.url,
    name: 'gmail',
  })}`;

const healthy = () => [
  sendgridUrl(sg.proxy.url),
  sesUrl(sesPeer.endpoint),
  mailgunUrl(mg.proxy.url),
  gmailUrl(gm.proxy.url),
];

// --- what each provider received (by the unique subject of a test's mail)

interface Arrival {
  status: number | undefined;
  from: string | undefined;
  to: string[];
  subject: string | undefined;
}

function sendgridGot(subject: string): Arrival[] {
  return sg.proxy.requests
    .filter((r) => r.method === 'POST' && r.url.endsWith('/v3/mail/send'))
    .map((r) => {
      const body = JSON.parse(r.body.toString('utf8')) as {
        from: { email: string };
        subject?: string;
        personalizations: { to: { email: string }[] }[];
      };
      return {
        status: r.status,
        from: body.from.email,
        to: body.personalizations.flatMap((p) => p.to.map((t) => t.email)),
        subject: body.subject,
      };
    })
    .filter((a) => a.subject === subject);
}

async function mailgunGot(subject: string): Promise<Arrival[]> {
  const out: Arrival[] = [];
  for (const r of mg.proxy.requests) {
    if (r.method !== 'POST' || !/\/v3\/[^/]+\/messages$/.test(r.url)) continue;
    const form = await new Response(new Uint8Array(r.body), {
      headers: { 'content-type': String(r.headers['content-type']) },
    }).formData();
    const text = (k: string) => form.getAll(k).map(String);
    if (text('subject')[0] !== subject) continue;
    out.push({ status: r.status, from: text('from')[0], to: text('to'), subject: text('subject')[0] });
  }
  return out;
}

async function gmailGot(subject: string): Promise<Arrival[]> {
  const out: Arrival[] = [];
  for (const r of gm.proxy.requests) {
    // a fault URL (/f/<id>/…) carries the API path after its prefix
    const d = await decodeSend({ ...r, url: r.url.replace(/^\/f\/[^/]+/, '') });
    if (!d || d.parsed.subject !== subject) continue;
    const to = Array.isArray(d.parsed.to) ? d.parsed.to : d.parsed.to ? [d.parsed.to] : [];
    out.push({
      status: r.status,
      from: d.parsed.from?.value[0]?.address,
      to: to.flatMap((a) => a.value.map((v) => v.address ?? '')),
      subject: d.parsed.subject,
    });
  }
  return out;
}

/** What aws-ses-v2-local stored (only mail SES accepted reaches it). */
async function sesGot(subject: string): Promise<Arrival[]> {
  return (await sesPeer.stored())
    .filter((e) => e.subject === subject)
    .map((e) => ({
      status: 200,
      from: addresses(e.from)[0],
      to: e.destination.to.flatMap(addresses),
      subject: e.subject,
    }));
}

/** Everything every provider got for one subject, by route name. */
async function arrivals(subject: string): Promise<Record<string, Arrival[]>> {
  return {
    sendgrid: sendgridGot(subject),
    ses: await sesGot(subject),
    mailgun: await mailgunGot(subject),
    gmail: await gmailGot(subject),
  };
}

/** How many requests each peer has seen so far (token requests too). */
const counts = () => ({
  sendgrid: sg.proxy.requests.length,
  ses: sesPeer.proxy.requests.length,
  mailgun: mg.proxy.requests.length,
  gmail: gm.proxy.requests.length,
  tokens: tokens.requests.length,
});

const mail = (subject: string) => ({ from: FROM, to: TO, subject, text: 'Bonjour' });
const arrived = (subject: string, status: number) => [{ status, from: FROM, to: [TO], subject }];

const noSecretIn = (what: unknown) => {
  const text = JSON.stringify(what) + (what instanceof Error ? what.message : '');
  for (const s of SECRETS) expect(text).not.toContain(s);
};

type Row = [route: string, ok: boolean, kind: string | undefined, phase: string | undefined];
const rows = (attempts: readonly Attempt[]): Row[] => attempts.map((a) => [a.route, a.ok, a.kind, a.phase]);

describe('one failover chain of the four API routes (createMailer, each route against its contract stand-in)', () => {
  const ORDER = ['sendgrid', 'ses', 'mailgun', 'gmail'] as const;

  const cases: {
    lands: (typeof ORDER)[number];
    before: () => RouteSpec[];
    failed: Row[];
    /** The status each failing route's peer answered the mail with (undefined: it never got it). */
    answered: Record<string, number | undefined>;
    success: number;
  }[] = [
    { lands: 'sendgrid', before: () => [], failed: [], answered: {}, success: 202 },
    {
      lands: 'ses',
      // nothing listens on SendGrid's port: the request never left
      before: () => [sendgridUrl(`http://127.0.0.1:${deadPort}`)],
      failed: [['sendgrid', false, 'unavailable', 'connect']],
      answered: { sendgrid: undefined },
      success: 200,
    },
    {
      lands: 'mailgun',
      // SendGrid's contract answers 500; SES throttles (TooManyRequestsException)
      before: () => [sendgridForced(500), sesThrottled()],
      failed: [
        ['sendgrid', false, 'unavailable', 'response'],
        ['ses', false, 'limited', 'response'],
      ],
      answered: { sendgrid: 500, ses: undefined },
      success: 200,
    },
    {
      lands: 'gmail',
      // SendGrid's contract answers 401 (bad key); SES's port cuts the connection; Mailgun's contract answers 429
      before: () => [sendgridForced(401), sesUrl(`https://127.0.0.1:${cutter.port}`), mailgunForced(429)],
      failed: [
        ['sendgrid', false, 'misconfigured', 'response'],
        ['ses', false, 'unavailable', 'connect'],
        ['mailgun', false, 'limited', 'response'],
      ],
      answered: { sendgrid: 401, ses: undefined, mailgun: 429 },
      success: 200,
    },
  ];

  it.each(cases)('the routes before $lands forced to fail: the mail lands on $lands', async (c) => {
    const org = `lands-on-${c.lands}`;
    const failing = c.before();
    chains.set(org, [...failing, ...healthy().slice(failing.length)]);
    const subject = `all apis → ${c.lands} ${randomUUID()}`;

    const receipt = await mailer.send(mail(subject), { organisation: org });

    expect(receipt.route).toBe(c.lands);
    expect(rows(receipt.attempts)).toEqual([...c.failed, [c.lands, true, undefined, undefined]]);
    noSecretIn(receipt);
    const got = await arrivals(subject);
    expect(got[c.lands], `${c.lands} has the mail`).toEqual(arrived(subject, c.success));
    for (const [route, status] of Object.entries(c.answered)) {
      // a failing route's peer answered with the forced status, or never got the mail
      expect(got[route], `${route} was forced to fail`).toEqual(status === undefined ? [] : arrived(subject, status));
    }
    for (const later of ORDER.slice(ORDER.indexOf(c.lands) + 1)) {
      expect(got[later], `${later}, after ${c.lands}, was not asked`).toEqual([]);
    }
  });

  it('all four forced to fail, each differently: one DeliveryError listing the four attempts', async () => {
    chains.set('all-fail', [
      sendgridForced(500),
      sesThrottled(),
      mailgunForced(401),
      // Gmail refuses the message (400 invalidArgument, Google's error body: the discovery document describes no error)
      gmailUrl(
        gm.fault({
          do: 'answer',
          status: 400,
          body: {
            error: {
              code: 400,
              message: 'Invalid To header',
              errors: [{ message: 'Invalid To header', domain: 'global', reason: 'invalidArgument' }],
              status: 'INVALID_ARGUMENT',
            },
          },
        }),
      ),
    ]);
    const subject = `all apis fail ${randomUUID()}`;

    const err: unknown = await mailer.send(mail(subject), { organisation: 'all-fail' }).catch((e: unknown) => e);

    expect(err).toBeInstanceOf(DeliveryError);
    const e = err as DeliveryError;
    expect(rows(e.attempts)).toEqual([
      ['sendgrid', false, 'unavailable', 'response'],
      ['ses', false, 'limited', 'response'],
      ['mailgun', false, 'misconfigured', 'response'],
      ['gmail', false, 'refused', 'response'],
    ]);
    expect(e.attempts.map((a) => a.code)).toEqual([
      'HTTP 500',
      'HTTP 429 TooManyRequestsException',
      'HTTP 401',
      'HTTP 400 invalidArgument',
    ]);
    // the last failure is a refusal: no route would take the mail unchanged, so no retry elsewhere
    expect(e.kind).toBe('refused');
    for (const route of ORDER) expect(e.message).toContain(`- ${route}: `);
    noSecretIn(e);
    const got = await arrivals(subject);
    expect(got.sendgrid).toEqual(arrived(subject, 500));
    expect(got.ses, 'SES throttled before the emulator').toEqual([]);
    expect(got.mailgun).toEqual(arrived(subject, 401));
    expect(got.gmail).toEqual(arrived(subject, 400));
  });

  it('SendGrid got the whole request and its answer was lost: unknown, the chain stops, no other route gets the mail', async () => {
    // the proxy passes the request to SendGrid's contract server, then cuts the route off without its answer
    chains.set('unknown', [sendgridUrl(sg.fault({ do: 'forward-then-cut' })), ...healthy().slice(1)]);
    const subject = `all apis unknown ${randomUUID()}`;
    const before = counts();

    const err: unknown = await mailer.send(mail(subject), { organisation: 'unknown' }).catch((e: unknown) => e);

    expect(err).toBeInstanceOf(DeliveryError);
    const e = err as DeliveryError;
    expect(e.kind).toBe('unknown');
    expect(rows(e.attempts)).toEqual([['sendgrid', false, 'unknown', 'data-sent']]);
    noSecretIn(e);
    const sent = sg.proxy.forwarded.filter((r: RecordedRequest) => r.body.toString('utf8').includes(subject));
    expect(
      sent.map((r) => r.upstreamStatus),
      'SendGrid accepted the mail',
    ).toEqual([202]);
    expect(counts()).toEqual({ ...before, sendgrid: before.sendgrid + 1 });
    const got = await arrivals(subject);
    expect(got.ses).toEqual([]);
    expect(got.mailgun).toEqual([]);
    expect(got.gmail).toEqual([]);
  });
});
