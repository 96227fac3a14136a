import { createHmac, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { createMailer, memoryStores } from '@mailvia/core';
import { testCertificate } from '@mailvia/core/testing';
// The provider packages' verifiers, handed to the receiver as an application does.
import { mailgunWebhook } from '@mailvia/transport-mailgun';
import { sendgridWebhook, verifySendgridSignature } from '@mailvia/transport-sendgrid';
import { sesWebhook } from '@mailvia/transport-ses';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// the providers' documented payloads live with their verifiers' tests, in the provider packages
import { contract, mailgunDocEvent } from '../../transport-mailgun/test/webhook-fixtures.js';
import { malleate, sendgridKeys } from '../../transport-sendgrid/test/webhook-signing.js';
import { notification, sesBounce, sesComplaint, sesDelivery, snsMessage } from '../../transport-ses/test/ses-events.js';
import {
  keepRawBody,
  mailviaAdmin,
  mailviaWebhooks,
  type WebhookEvent,
  WebhookRefusal,
  type WebhookRefusalInfo,
  type WebhookVerifier,
} from '../src/index.js';
import { EXPRESS_VERSIONS, json, type Served, serve } from './helpers.js';

const vector = contract('sendgrid/event-webhook-signature-vector.json');
const sgExamples = contract('sendgrid/event-webhook-examples.json');
const mgVector = contract('mailgun/webhook-signature-vector.selfmade.json');

// Keys of two organisations (made here; SendGrid shows the public key as base64 DER).
const sgA = sendgridKeys();
const sgB = sendgridKeys();
const MG_KEY_A = 'fake-mailgun-signing-key-aaaa';
const TOPIC_A = 'arn:aws:sns:us-east-1:123456789012:ses-events-school-a';
const TOPIC_B = 'arn:aws:sns:us-east-1:210987654321:ses-events-school-b';
const CERT_URL = 'https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem';

function signSendgrid(privateKey: ReturnType<typeof sendgridKeys>['privateKey'], timestamp: string, body: string) {
  return sign('sha256', Buffer.concat([Buffer.from(timestamp), Buffer.from(body)]), privateKey).toString('base64');
}

function mailgunBody(eventData: unknown, key = MG_KEY_A, timestamp = String(Math.floor(Date.now() / 1000))) {
  const token = randomBytes(25).toString('hex');
  const signature = createHmac('sha256', key)
    .update(timestamp + token)
    .digest('hex');
  return JSON.stringify({ signature: { timestamp, token, signature }, 'event-data': eventData });
}

describe.each(EXPRESS_VERSIONS)('webhooks on $name', ({ express }) => {
  let server: Served;
  let parsedFirst: Served;
  let rawKept: Served;
  const received: WebhookEvent[] = [];
  const refused: WebhookRefusalInfo[] = [];
  const certFetches: string[] = [];
  const confirmations: string[] = [];
  let clock: number | undefined;

  const secrets: Record<string, Record<string, string[]>> = {
    'school-a': { sendgrid: [sgA.publicKey], mailgun: [MG_KEY_A], ses: [TOPIC_A] },
    'school-b': { sendgrid: [sgB.publicKey], ses: [TOPIC_B] },
    'vector-org': { sendgrid: [vector.public_key], mailgun: [mgVector.signing_key] },
  };
  const router = () =>
    mailviaWebhooks({
      providers: [
        sendgridWebhook(),
        mailgunWebhook(),
        sesWebhook({
          confirmSubscriptions: true,
          fetchCertificate: async (url) => {
            certFetches.push(url);
            return testCertificate().cert;
          },
          confirm: async (url) => {
            confirmations.push(url);
          },
        }),
      ],
      secrets: ({ provider, organisation }) => secrets[organisation]?.[provider],
      onEvents: (events) => {
        received.push(...events);
      },
      onRefused: (info) => refused.push(info),
      now: () => clock ?? Date.now(),
    });

  beforeAll(async () => {
    // The receiver mounted before the app's JSON parser (the documented order).
    const app = express();
    app.use('/webhooks', router());
    app.use(express.json());
    server = await serve(app);
    // A JSON parser first, without keeping the raw body: the receiver must say so.
    const app2 = express();
    app2.use(express.json());
    app2.use('/webhooks', router());
    parsedFirst = await serve(app2);
    // A JSON parser first that keeps the raw body.
    const app3 = express();
    app3.use(express.json({ verify: keepRawBody }));
    app3.use('/webhooks', router());
    rawKept = await serve(app3);
  });
  afterAll(async () => {
    await Promise.all([server?.close(), parsedFirst?.close(), rawKept?.close()]);
  });

  const post = (base: Served, path: string, body: string, headers: Record<string, string> = {}) =>
    fetch(`${base.url}/webhooks/${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body,
    });
  const sgHeaders = (signature: string, timestamp: string) => ({
    'X-Twilio-Email-Event-Webhook-Signature': signature,
    'X-Twilio-Email-Event-Webhook-Timestamp': timestamp,
  });
  const take = () => received.splice(0, received.length);

  describe('SendGrid', () => {
    it("accepts SendGrid's own signed test vector (at its time) and normalises its event", async () => {
      clock = Number(vector.timestamp) * 1000 + 5_000;
      try {
        const res = await post(
          server,
          'sendgrid/vector-org',
          vector.payload,
          sgHeaders(vector.signature, vector.timestamp),
        );
        expect(res.status, await res.clone().text()).toBe(200);
        expect(await json(res)).toEqual({ received: 1 });
      } finally {
        clock = undefined;
      }
      const [event] = take();
      expect(event).toMatchObject({
        type: 'unknown',
        providerEvent: 'test_event',
        provider: 'sendgrid',
        organisation: 'vector-org',
      });
    });

    it('takes a batch of every documented event type byte for byte, each event tagged with the organisation of its URL', async () => {
      // Pretty-printed as SendGrid's docs show it: re-serialising the parsed JSON would break the signature.
      const body = JSON.stringify(sgExamples.all_types_batch, null, 2);
      const ts = String(Math.floor(Date.now() / 1000));
      const res = await post(server, 'sendgrid/school-a', body, sgHeaders(signSendgrid(sgA.privateKey, ts, body), ts));
      expect(res.status, await res.clone().text()).toBe(200);
      expect(await json(res)).toEqual({ received: sgExamples.all_types_batch.length });
      const events = take();
      expect(events).toHaveLength(sgExamples.all_types_batch.length);
      expect(new Set(events.map((e) => `${e.provider}/${e.organisation}`))).toEqual(new Set(['sendgrid/school-a']));
      expect(events.find((e) => e.type === 'bounced')).toMatchObject({
        recipient: 'example@test.com',
        permanent: true,
      });
    });

    it("refuses a forged body, another organisation's key, a missing signature, a stale and a replayed request", async () => {
      const body = JSON.stringify([sgExamples.first_example_by_event.bounce]);
      const ts = String(Math.floor(Date.now() / 1000));
      const signature = signSendgrid(sgA.privateKey, ts, body);

      const forged = await post(
        server,
        'sendgrid/school-a',
        body.replace('example@test.com', 'victim@test.com'),
        sgHeaders(signature, ts),
      );
      expect(forged.status).toBe(401);
      expect((await json(forged)).error).toMatchObject({ code: 'webhook_signature_invalid' });

      // Signed by school-b's account, posted to school-a's URL.
      const otherKey = await post(
        server,
        'sendgrid/school-a',
        body,
        sgHeaders(signSendgrid(sgB.privateKey, ts, body), ts),
      );
      expect(otherKey.status).toBe(401);

      const unsigned = await post(server, 'sendgrid/school-a', body);
      expect(unsigned.status).toBe(401);

      const old = String(Math.floor(Date.now() / 1000) - 600);
      const stale = await post(
        server,
        'sendgrid/school-a',
        body,
        sgHeaders(signSendgrid(sgA.privateKey, old, body), old),
      );
      expect(stale.status).toBe(401);
      expect((await json(stale)).error.code).toBe('webhook_stale');

      const first = await post(server, 'sendgrid/school-a', body, sgHeaders(signature, ts));
      expect(first.status).toBe(200);
      const replay = await post(server, 'sendgrid/school-a', body, sgHeaders(signature, ts));
      expect(replay.status).toBe(409);
      const err = (await json(replay)).error;
      expect(err).toMatchObject({ code: 'webhook_replayed' });
      expect(err.help).toMatch(/^https:\/\//);

      // The same request with the signature's other valid form is still a replay.
      const twin = malleate(signature);
      expect(twin).not.toBe(signature);
      expect(verifySendgridSignature(sgA.publicKey, ts, body, twin)).toBe(true);
      expect((await post(server, 'sendgrid/school-a', body, sgHeaders(twin, ts))).status).toBe(409);

      expect(take()).toHaveLength(1);
      expect(refused.map((r) => r.code)).toEqual(
        expect.arrayContaining(['webhook_signature_invalid', 'webhook_stale', 'webhook_replayed']),
      );
      expect(JSON.stringify(refused)).not.toContain(sgA.publicKey);
    });

    it('refuses an organisation without a secret and a provider not mounted', async () => {
      const res = await post(server, 'sendgrid/school-z', '[]', sgHeaders('x', '1'));
      expect(res.status).toBe(404);
      expect((await json(res)).error.code).toBe('webhook_unknown_organisation');
      const res2 = await post(server, 'postmark/school-a', '[]');
      expect(res2.status).toBe(404);
      expect((await json(res2)).error.code).toBe('webhook_unknown_provider');
      const res3 = await fetch(`${server.url}/webhooks/sendgrid/school-a`);
      expect(res3.status).toBe(405);
    });

    it('says what to do when a JSON parser ran first, and works when the parser keeps the raw body', async () => {
      const body = JSON.stringify([sgExamples.first_example_by_event.delivered], null, 1);
      const ts = String(Math.floor(Date.now() / 1000));
      const headers = sgHeaders(signSendgrid(sgA.privateKey, ts, body), ts);
      const res = await post(parsedFirst, 'sendgrid/school-a', body, headers);
      expect(res.status).toBe(500);
      const err = (await json(res)).error;
      expect(err.code).toBe('webhook_body_already_parsed');
      expect(err.message).toMatch(/keepRawBody/);
      const ok = await post(rawKept, 'sendgrid/school-a', body, headers);
      expect(ok.status).toBe(200);
      expect(take().map((e) => e.type)).toEqual(['delivered']);
    });
  });

  describe('Mailgun', () => {
    it("accepts the vector's example body (at its time)", async () => {
      clock = Number(mgVector.timestamp) * 1000;
      try {
        const res = await post(server, 'mailgun/vector-org', JSON.stringify(mgVector.example_webhook_body));
        expect(res.status, await res.clone().text()).toBe(200);
      } finally {
        clock = undefined;
      }
      expect(take()).toMatchObject([
        { type: 'delivered', recipient: 'alice@example.com', eventId: 'DACSsAdVSeGpLid7TN03WA' },
      ]);
    });

    it('refuses a wrong key, a stale timestamp and a replayed token', async () => {
      const forged = await post(
        server,
        'mailgun/school-a',
        mailgunBody(mailgunDocEvent('Delivered'), 'fake-wrong-key'),
      );
      expect(forged.status).toBe(401);
      const old = String(Math.floor(Date.now() / 1000) - 3600);
      const stale = await post(server, 'mailgun/school-a', mailgunBody(mailgunDocEvent('Delivered'), MG_KEY_A, old));
      expect((await json(stale)).error.code).toBe('webhook_stale');
      const body = mailgunBody(mailgunDocEvent('Delivered'));
      expect((await post(server, 'mailgun/school-a', body)).status).toBe(200);
      const replay = await post(server, 'mailgun/school-a', body);
      expect(replay.status).toBe(409);
      expect(take()).toHaveLength(1);
    });
  });

  describe('SES through SNS', () => {
    const snsPost = (base: Served, org: string, message: Record<string, string>) =>
      fetch(`${base.url}/webhooks/ses/${org}`, {
        method: 'POST',
        // SNS posts JSON as text/plain, which the app's express.json() leaves alone.
        headers: { 'content-type': 'text/plain; charset=UTF-8', 'x-amz-sns-message-type': message.Type! },
        body: JSON.stringify(message),
      });

    it('takes SNS messages (text/plain, past an app JSON parser) signed with versions 1 and 2', async () => {
      for (const [event, version] of [
        [sesBounce, '1'],
        [sesComplaint, '2'],
      ] as const) {
        const res = await snsPost(parsedFirst, 'school-a', notification(event, TOPIC_A, { version }));
        expect(res.status, await res.clone().text()).toBe(200);
      }
      expect(take().map((e) => `${e.provider}/${e.organisation} ${e.type}:${e.recipient}`)).toEqual([
        'ses/school-a bounced:jane@example.com',
        'ses/school-a complained:richard@example.com',
      ]);
      expect(certFetches.every((u) => u === CERT_URL)).toBe(true);
    });

    it('refuses a topic the organisation does not allow, before fetching any certificate', async () => {
      const before = certFetches.length;
      const res = await snsPost(server, 'school-a', notification(sesBounce, TOPIC_B));
      expect(res.status).toBe(403);
      expect((await json(res)).error.code).toBe('webhook_topic_not_allowed');
      expect(certFetches.length).toBe(before);
    });

    it('refuses a message signed by another key, a stale and a replayed one', async () => {
      const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      const other = notification(sesBounce, TOPIC_A, {
        key: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
      });
      expect((await snsPost(server, 'school-a', other)).status).toBe(401);

      const old = notification(sesBounce, TOPIC_A, { timestamp: new Date(Date.now() - 2 * 3600_000).toISOString() });
      const stale = await snsPost(server, 'school-a', old);
      expect((await json(stale)).error.code).toBe('webhook_stale');

      const once = notification(sesComplaint);
      expect((await snsPost(server, 'school-a', once)).status).toBe(200);
      expect((await snsPost(server, 'school-a', once)).status).toBe(409);
      expect(take()).toHaveLength(1);
    });

    it("answers 500 when the verifier cannot fetch SNS's certificate, and takes SNS's next delivery of the same message", async () => {
      let fetches = 0;
      const infos: WebhookRefusalInfo[] = [];
      const app = express();
      app.use(
        '/webhooks',
        mailviaWebhooks({
          providers: [
            sesWebhook({
              fetchCertificate: async () => {
                fetches++;
                if (fetches === 1) throw new Error('ECONNRESET');
                return testCertificate().cert;
              },
            }),
          ],
          secrets: () => [TOPIC_A],
          onRefused: (info) => infos.push(info),
        }),
      );
      const s = await serve(app);
      try {
        const message = notification(sesDelivery);
        const first = await snsPost(s, 'school-a', message);
        expect(first.status).toBe(500);
        expect((await json(first)).error).toMatchObject({
          code: 'internal',
          message: expect.stringMatching(/SNS will retry/),
        });
        expect(infos.map((i) => i.code)).toEqual(['internal']);
        const retry = await snsPost(s, 'school-a', message);
        expect(retry.status, await retry.clone().text()).toBe(200);
        expect(await json(retry)).toEqual({ received: 2 });
      } finally {
        await s.close();
      }
    });

    it('confirms a subscription of an allowed topic only through an SNS URL, and only when configured', async () => {
      const subscribeUrl = `https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=${TOPIC_A}&Token=fake-token`;
      const confirmation = snsMessage({
        Type: 'SubscriptionConfirmation',
        TopicArn: TOPIC_A,
        Message: 'You have chosen to subscribe to the topic.',
        SubscribeURL: subscribeUrl,
        Token: 'fake-token',
      });
      const res = await snsPost(server, 'school-a', confirmation);
      expect(res.status, await res.clone().text()).toBe(200);
      expect(await json(res)).toMatchObject({ subscription: 'confirmed', topic: TOPIC_A });
      expect(confirmations).toEqual([subscribeUrl]);

      const evil = snsMessage({
        Type: 'SubscriptionConfirmation',
        TopicArn: TOPIC_A,
        Message: 'x',
        SubscribeURL: 'https://evil.example/confirm',
        Token: 'fake-token',
      });
      expect((await snsPost(server, 'school-a', evil)).status).toBe(400);
      expect(confirmations).toHaveLength(1);

      // A receiver not configured to confirm refuses, without visiting anything.
      const strict = express();
      strict.use(
        '/webhooks',
        mailviaWebhooks({
          providers: [
            sesWebhook({
              fetchCertificate: async () => testCertificate().cert,
              confirm: async (u) => {
                confirmations.push(u);
              },
            }),
          ],
          secrets: () => [TOPIC_A],
        }),
      );
      const s = await serve(strict);
      try {
        const again = snsMessage({
          Type: 'SubscriptionConfirmation',
          TopicArn: TOPIC_A,
          Message: 'x',
          SubscribeURL: subscribeUrl,
          Token: 'fake-token',
        });
        const refusedRes = await snsPost(s, 'school-a', again);
        expect(refusedRes.status).toBe(403);
        expect((await json(refusedRes)).error.code).toBe('webhook_subscription_refused');
      } finally {
        await s.close();
      }
      expect(confirmations).toHaveLength(1);
    });
  });

  it('lets a provider deliver again when the application failed to process the events', async () => {
    let failNext = true;
    const app = express();
    app.use(
      '/webhooks',
      mailviaWebhooks({
        providers: [mailgunWebhook()],
        secrets: () => MG_KEY_A,
        onEvents: () => {
          if (failNext) {
            failNext = false;
            throw new Error('database down');
          }
        },
      }),
    );
    app.use((_err: unknown, _req: unknown, res: { status(n: number): { json(b: unknown): void } }, _next: unknown) => {
      res.status(500).json({ error: 'logged' });
    });
    const s = await serve(app);
    try {
      const body = mailgunBody(mailgunDocEvent('Delivered'));
      const post1 = await fetch(`${s.url}/webhooks/mailgun/school-a`, {
        method: 'POST',
        body,
        headers: { 'content-type': 'application/json' },
      });
      expect(post1.status).toBe(500);
      const post2 = await fetch(`${s.url}/webhooks/mailgun/school-a`, {
        method: 'POST',
        body,
        headers: { 'content-type': 'application/json' },
      });
      expect(post2.status).toBe(200);
    } finally {
      await s.close();
    }
  });
  it("mounts verifiers given as an object at their keys, the application's own verifier included", async () => {
    // The application's own receiver for a provider Mailvia has no package for: the contract of core.
    const acme: WebhookVerifier = {
      provider: 'acme',
      async verify({ rawBody, headers, secrets }) {
        if (headers['x-acme-token'] === undefined || !secrets.includes(String(headers['x-acme-token']))) {
          throw new WebhookRefusal('webhook_signature_invalid', 'The Acme token does not match.');
        }
        const body = JSON.parse(rawBody.toString('utf8')) as { id: string; to: string };
        return {
          replayId: body.id,
          events: [
            {
              type: 'delivered',
              providerEvent: 'done',
              recipient: body.to,
              occurredAt: new Date(0).toISOString(),
              raw: body,
            },
          ],
        };
      },
    };
    const events: WebhookEvent[] = [];
    const infos: WebhookRefusalInfo[] = [];
    const app = express();
    app.use(
      '/webhooks',
      mailviaWebhooks({
        providers: { 'sendgrid-eu': sendgridWebhook(), 'acme-mail': acme },
        secrets: ({ provider }) => (provider === 'sendgrid-eu' ? sgA.publicKey : 'fake-acme-token-aaaa'),
        onEvents: (e) => {
          events.push(...e);
        },
        onRefused: (info) => infos.push(info),
      }),
    );
    const s = await serve(app);
    try {
      const body = JSON.stringify([sgExamples.first_example_by_event.delivered]);
      const ts = String(Math.floor(Date.now() / 1000));
      const sg = await fetch(`${s.url}/webhooks/sendgrid-eu/school-a`, {
        method: 'POST',
        headers: {
          'X-Twilio-Email-Event-Webhook-Signature': signSendgrid(sgA.privateKey, ts, body),
          'X-Twilio-Email-Event-Webhook-Timestamp': ts,
        },
        body,
      });
      expect(sg.status, await sg.clone().text()).toBe(200);
      // Mounted at its key only.
      expect((await fetch(`${s.url}/webhooks/sendgrid/school-a`, { method: 'POST', body })).status).toBe(404);

      const acmeBody = JSON.stringify({ id: 'evt-1', to: 'parent@example.org' });
      const forged = await fetch(`${s.url}/webhooks/acme-mail/school-a`, {
        method: 'POST',
        headers: { 'x-acme-token': 'fake-wrong-token' },
        body: acmeBody,
      });
      expect(forged.status).toBe(401);
      expect((await json(forged)).error).toMatchObject({
        code: 'webhook_signature_invalid',
        message: 'The Acme token does not match.',
      });
      const ok = await fetch(`${s.url}/webhooks/acme-mail/school-a`, {
        method: 'POST',
        headers: { 'x-acme-token': 'fake-acme-token-aaaa' },
        body: acmeBody,
      });
      expect(ok.status).toBe(200);
      expect(events.map((e) => `${e.provider}/${e.organisation} ${e.type}`)).toEqual([
        'sendgrid-eu/school-a delivered',
        'acme-mail/school-a delivered',
      ]);
      expect(infos.map((i) => `${i.provider} ${i.code}`)).toEqual([
        'sendgrid webhook_unknown_provider',
        'acme-mail webhook_signature_invalid',
      ]);
    } finally {
      await s.close();
    }
  });
});

it('cannot be created without providers or secrets', () => {
  expect(() => mailviaWebhooks({ providers: [], secrets: () => 'x' })).toThrow(/providers/);
  expect(() => mailviaWebhooks({ providers: {}, secrets: () => 'x' })).toThrow(/@mailvia\/transport-sendgrid/);
  expect(() => mailviaWebhooks({ providers: [mailgunWebhook(), mailgunWebhook()], secrets: () => 'x' })).toThrow(
    /"mailgun" is listed twice/,
  );
  expect(() => mailviaWebhooks({ providers: { 'not/url-safe': mailgunWebhook() }, secrets: () => 'x' })).toThrow(
    /URL-safe/,
  );
  expect(() => mailviaWebhooks({ providers: [mailgunWebhook()] } as never)).toThrow(/secrets/);
});

describe.each(EXPRESS_VERSIONS)(
  'provider events feed the delivery log and the suppression list on $name',
  ({ express }) => {
    it('records a bounce on its delivery, suppresses hard bounces and complaints, not deliveries', async () => {
      const stores = memoryStores();
      const mailer = createMailer({ mode: 'development', ...stores });
      const events: WebhookEvent[] = [];
      const app = express();
      app.use(
        '/webhooks',
        mailviaWebhooks({
          providers: [sendgridWebhook(), mailgunWebhook()],
          secrets: ({ provider }) => (provider === 'sendgrid' ? sgA.publicKey : MG_KEY_A),
          mailer,
          onEvents: (e) => {
            events.push(...e);
          },
        }),
      );
      const s = await serve(app);
      try {
        const receipt = await mailer.send(
          {
            from: 'office@school-a.example',
            to: ['parent@example.org', 'other@example.org'],
            subject: 'Trip',
            text: 'Friday.',
          },
          { organisation: 'school-a' },
        );
        const [record] = await stores.log.query({ organisation: 'school-a' });
        expect(record!.messageId).toBe(receipt.messageId);

        // SendGrid reports a hard bounce of that message for one recipient, and a delivery for the other.
        const body = JSON.stringify([
          { ...sgExamples.first_example_by_event.bounce, email: 'Parent@example.org', 'smtp-id': receipt.messageId },
          { ...sgExamples.first_example_by_event.delivered, email: 'other@example.org', 'smtp-id': receipt.messageId },
        ]);
        const ts = String(Math.floor(Date.now() / 1000));
        const res = await fetch(`${s.url}/webhooks/sendgrid/school-a`, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            ...{
              'X-Twilio-Email-Event-Webhook-Signature': signSendgrid(sgA.privateKey, ts, body),
              'X-Twilio-Email-Event-Webhook-Timestamp': ts,
            },
          },
          body,
        });
        expect(res.status, await res.clone().text()).toBe(200);
        expect(events.map((e) => [e.type, e.deliveryId])).toEqual([
          ['bounced', record!.id],
          ['delivered', record!.id],
        ]);
        // What the provider said is recorded beside the record; the engine's own verdict stays.
        const updated = await stores.log.get(record!.id);
        expect(updated).toMatchObject({ status: 'sent' });
        expect(updated!.kind).toBeUndefined();
        expect(updated!.reason).toBeUndefined();
        expect(updated!.events).toEqual([
          {
            type: 'bounced',
            at: 1513299569000,
            provider: 'sendgrid',
            recipient: 'parent@example.org',
            permanent: true,
            code: '5.0.0',
            detail: '500 unknown recipient',
          },
          {
            type: 'delivered',
            at: 1513299569000,
            provider: 'sendgrid',
            recipient: 'other@example.org',
            detail: '250 OK',
          },
        ]);
        expect(await stores.suppression.has('school-a', 'parent@example.org')).toMatchObject({
          source: 'bounce',
          deliveryId: record!.id,
          reason: expect.stringMatching(/^sendgrid reported bounced \(permanent\): 500 unknown recipient/),
        });
        expect(await stores.suppression.has('school-a', 'other@example.org')).toBeUndefined();
        expect(await stores.suppression.has('school-b', 'parent@example.org')).toBeUndefined();

        // A Mailgun complaint (from its documentation) suppresses its recipient too.
        const complained = await fetch(`${s.url}/webhooks/mailgun/school-a`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: mailgunBody(mailgunDocEvent('Complained')),
        });
        expect(complained.status).toBe(200);
        expect(await stores.suppression.has('school-a', 'foo@example.com')).toMatchObject({
          source: 'complaint',
          reason: expect.stringMatching(/complained/),
        });
      } finally {
        await s.close();
        await mailer.close();
      }
    });

    it('matches each event to its own delivery among several to one recipient, by Message-ID or provider id, and the admin API shows the events', async () => {
      const stores = memoryStores();
      const mailer = createMailer({ mode: 'development', ...stores });
      const app = express();
      app.use(
        '/webhooks',
        mailviaWebhooks({
          providers: [sendgridWebhook(), mailgunWebhook()],
          secrets: ({ provider }) => (provider === 'sendgrid' ? sgA.publicKey : MG_KEY_A),
          mailer,
        }),
      );
      app.use('/admin', mailviaAdmin({ mailer, authorize: () => true }));
      const s = await serve(app);
      try {
        // Three mails to the same parent from school-a, one from school-b.
        const send = (organisation: string, subject: string) =>
          mailer.send(
            { from: `office@${organisation}.example`, to: 'parent@example.org', subject, text: '…' },
            { organisation },
          );
        const r1 = await send('school-a', 'Trip');
        const r2 = await send('school-a', 'Lunch menu');
        const r3 = await send('school-a', 'Report card');
        const rb = await send('school-b', 'Other school');
        const idOf = async (organisation: string, messageId: string) =>
          (await stores.log.query({ organisation, messageId }))[0]!.id;
        const [id1, id2, id3] = await Promise.all([r1, r2, r3].map((r) => idOf('school-a', r.messageId)));
        expect(r3.providerMessageId).toBeTruthy();

        const sgPost = (events: unknown[]) => {
          const body = JSON.stringify(events);
          const ts = String(Math.floor(Date.now() / 1000));
          return fetch(`${s.url}/webhooks/sendgrid/school-a`, {
            method: 'POST',
            headers: {
              'content-type': 'application/json',
              'X-Twilio-Email-Event-Webhook-Signature': signSendgrid(sgA.privateKey, ts, body),
              'X-Twilio-Email-Event-Webhook-Timestamp': ts,
            },
            body,
          });
        };
        const { 'smtp-id': _ignored, ...openNoSmtpId } = sgExamples.first_example_by_event.open;
        const res = await sgPost([
          // by our Message-ID (SendGrid's smtp-id)
          { ...sgExamples.first_example_by_event.delivered, email: 'parent@example.org', 'smtp-id': r2.messageId },
          // by SendGrid's message id only (sg_message_id is X-Message-Id plus a filter suffix)
          {
            ...openNoSmtpId,
            email: 'parent@example.org',
            sg_message_id: `${r3.providerMessageId}.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0`,
          },
          // school-b's Message-ID, posted to school-a's URL: no delivery of school-a
          { ...sgExamples.first_example_by_event.delivered, email: 'parent@example.org', 'smtp-id': rb.messageId },
        ]);
        expect(res.status, await res.clone().text()).toBe(200);
        // Mailgun tells the Message-ID without angle brackets.
        const delivered = mailgunDocEvent('Delivered') as Record<string, any>;
        const mg = await fetch(`${s.url}/webhooks/mailgun/school-a`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: mailgunBody({
            ...delivered,
            recipient: 'parent@example.org',
            message: {
              ...delivered.message,
              headers: { ...delivered.message.headers, 'message-id': r1.messageId.slice(1, -1) },
            },
          }),
        });
        expect(mg.status, await mg.clone().text()).toBe(200);

        const events = async (id: string | undefined) =>
          ((await stores.log.get(id!))?.events ?? []).map((e) => `${e.provider}:${e.type}`);
        expect(await events(id1)).toEqual(['mailgun:delivered']);
        expect(await events(id2)).toEqual(['sendgrid:delivered']);
        expect(await events(id3)).toEqual(['sendgrid:opened']);
        expect(await events(await idOf('school-b', rb.messageId))).toEqual([]);

        // The admin API shows them, with the record's own status untouched.
        const list = await json(await fetch(`${s.url}/admin/organisations/school-a/deliveries`));
        const byId = new Map(list.deliveries.map((d: { id: string }) => [d.id, d]));
        expect(byId.get(id3)).toMatchObject({
          status: 'sent',
          events: [{ type: 'opened', provider: 'sendgrid', recipient: 'parent@example.org', at: 1513299569000 }],
        });
        const one = await json(await fetch(`${s.url}/admin/organisations/school-a/deliveries/${id1}`));
        expect(one.events).toMatchObject([{ type: 'delivered', provider: 'mailgun', at: 1529692199626 }]);
      } finally {
        await s.close();
        await mailer.close();
      }
    });
  },
);
