import { generateKeyPairSync } from 'node:crypto';
import { type VerifiedWebhook, WebhookRefusal, type WebhookRequest } from '@mailvia/core';
import { testCertificate } from '@mailvia/core/testing';
import { describe, expect, it } from 'vitest';
import { type SesWebhookOptions, SNS_URL_PATTERN, sesWebhook, snsStringToSign } from '../src/index.js';
import {
  CERT_URL,
  notification,
  sesBounce,
  sesClick,
  sesComplaint,
  sesDelivery,
  sesDeliveryDelay,
  sesTransientBounce,
  snsMessage,
} from './ses-events.js';

const TOPIC_A = 'arn:aws:sns:us-east-1:123456789012:ses-events-school-a';
const TOPIC_B = 'arn:aws:sns:us-east-1:210987654321:ses-events-school-b';

/** The verifier with its certificate fetch and subscription visit recorded instead of going online. */
function verifier(options: SesWebhookOptions = {}) {
  const certFetches: string[] = [];
  const confirmations: string[] = [];
  const ses = sesWebhook({
    fetchCertificate: async (url) => {
      certFetches.push(url);
      return testCertificate().cert;
    },
    confirm: async (url) => {
      confirmations.push(url);
    },
    ...options,
  });
  // SNS posts JSON as text/plain and names the message type in a header.
  const verify = (message: Record<string, string>, secrets: string[] = [TOPIC_A]) =>
    ses.verify({
      rawBody: Buffer.from(JSON.stringify(message)),
      headers: { 'content-type': 'text/plain; charset=UTF-8', 'x-amz-sns-message-type': message.Type },
      secrets,
      organisation: 'school-a',
    } satisfies WebhookRequest);
  return { ses, verify, certFetches, confirmations };
}

async function refusal(promise: Promise<VerifiedWebhook>): Promise<WebhookRefusal> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!WebhookRefusal.isInstance(err)) throw new Error(`expected a WebhookRefusal, got ${String(err)}`);
  return err;
}

describe('SES events through SNS', () => {
  it('verifies signature versions 1 and 2 and normalises bounces, complaints, deliveries, clicks and delays', async () => {
    const { verify, certFetches } = verifier();
    const events = [];
    for (const [event, version] of [
      [sesBounce, '1'],
      [sesTransientBounce, '2'],
      [sesComplaint, '2'],
      [sesDelivery, '1'],
      [sesClick, '2'],
      [sesDeliveryDelay, '2'],
    ] as const) {
      events.push(...(await verify(notification(event, TOPIC_A, { version }))).events);
    }
    expect(events.map((e) => `${e.type}:${e.recipient}`)).toEqual([
      'bounced:jane@example.com',
      'bounced:full@example.com',
      'complained:richard@example.com',
      'delivered:jane@example.com',
      'delivered:richard@example.com',
      'clicked:recipient@example.com',
      'deferred:recipient@example.com',
    ]);
    expect(events[0]).toMatchObject({
      permanent: true,
      status: '5.1.1',
      providerMessageId: '00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000',
      messageId: '<custom-message-id@example.com>',
      tags: ['spring'],
    });
    expect(events[1]!.permanent).toBe(false);
    expect(events[5]!.url).toMatch(/^https:\/\/docs\.aws\.amazon\.com\//);
    // One certificate URL, fetched once and kept.
    expect(certFetches).toEqual([CERT_URL]);
  });

  it("gives the SNS MessageId as the replay key, its Timestamp as the signing time, and SNS's retry window as tolerance", async () => {
    const { ses, verify } = verifier();
    const message = notification(sesComplaint);
    const verified = await verify(message);
    expect(verified).toMatchObject({ replayId: message.MessageId, signedAt: Date.parse(message.Timestamp!) });
    expect(ses.tolerance).toBe(3600);
    expect(sesWebhook({ tolerance: 600, provider: 'ses-eu' })).toMatchObject({ tolerance: 600, provider: 'ses-eu' });
  });

  it('refuses a topic the organisation does not allow, before fetching any certificate', async () => {
    const { verify, certFetches } = verifier();
    const err = await refusal(verify(notification(sesBounce, TOPIC_B)));
    expect(err).toMatchObject({ code: 'webhook_topic_not_allowed', statusCode: 403 });
    expect(err.message).not.toContain(TOPIC_B);
    expect(certFetches).toEqual([]);
    // The same message is accepted for the organisation that allows the topic.
    await expect(verify(notification(sesBounce, TOPIC_B), [TOPIC_B])).resolves.toMatchObject({
      events: [{ type: 'bounced' }],
    });
  });

  it('never fetches a certificate from outside the SNS hosts', async () => {
    const { verify, certFetches } = verifier();
    for (const certUrl of [
      'https://sns.us-east-1.amazonaws.com.evil.example/cert.pem',
      'http://sns.us-east-1.amazonaws.com/cert.pem',
      'https://evil.example/sns.us-east-1.amazonaws.com/cert.pem',
      'https://sns.us-east-1.amazonaws.com@evil.example/cert.pem',
      'https://s3.amazonaws.com/cert.pem',
      'https://sns.us-east-1.amazonaws.com/cert.txt',
    ]) {
      const err = await refusal(verify(notification(sesBounce, TOPIC_A, { certUrl })));
      expect(err.code, certUrl).toBe('webhook_signature_invalid');
    }
    expect(certFetches).toEqual([]);
    expect(SNS_URL_PATTERN.test('https://sns.cn-north-1.amazonaws.com.cn/x.pem')).toBe(true);
  });

  it('refuses a message signed by another key, a changed message, and an unknown signature version', async () => {
    const { verify } = verifier();
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const other = notification(sesBounce, TOPIC_A, {
      key: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    });
    expect((await refusal(verify(other))).code).toBe('webhook_signature_invalid');

    const changed = notification(sesBounce);
    changed.Message = changed.Message!.replace('jane@example.com', 'victim@example.com');
    expect((await refusal(verify(changed))).message).toBe('The SNS signature does not match.');

    const v3 = notification(sesBounce, TOPIC_A, { version: '3' });
    expect((await refusal(verify(v3))).message).toMatch(/SignatureVersion 3/);
  });

  it('refuses what is not an SNS message, and a message type header that disagrees with the body', async () => {
    const { ses, verify } = verifier();
    const notSns = await refusal(
      ses.verify({ rawBody: Buffer.from('{"hello":1}'), headers: {}, secrets: [TOPIC_A], organisation: 'school-a' }),
    );
    expect(notSns).toMatchObject({ code: 'webhook_malformed', statusCode: 400 });
    const m = notification(sesBounce);
    const mismatch = await refusal(
      ses.verify({
        rawBody: Buffer.from(JSON.stringify(m)),
        headers: { 'x-amz-sns-message-type': 'SubscriptionConfirmation' },
        secrets: [TOPIC_A],
        organisation: 'school-a',
      }),
    );
    expect(mismatch.code).toBe('webhook_malformed');
    // A Notification whose Message is not JSON is still taken, as one unknown event.
    const text = snsMessage({ Type: 'Notification', TopicArn: TOPIC_A, Message: 'plain text' });
    expect((await verify(text)).events).toMatchObject([{ type: 'unknown' }]);
  });

  it('answers 500 when the signing certificate cannot be fetched (SNS retries), and fetches it again next time', async () => {
    let attempts = 0;
    const ses = sesWebhook({
      fetchCertificate: async () => {
        attempts++;
        if (attempts === 1) throw new Error('ECONNRESET');
        return testCertificate().cert;
      },
    });
    const request = (message: Record<string, string>): WebhookRequest => ({
      rawBody: Buffer.from(JSON.stringify(message)),
      headers: {},
      secrets: [TOPIC_A],
      organisation: 'school-a',
    });
    const err = await refusal(ses.verify(request(notification(sesDelivery))));
    expect(err).toMatchObject({ code: 'internal', statusCode: 500 });
    await expect(ses.verify(request(notification(sesDelivery)))).resolves.toMatchObject({
      events: [{ type: 'delivered' }, { type: 'delivered' }],
    });
    expect(attempts).toBe(2);
  });

  it('confirms a subscription of an allowed topic only through an SNS URL, only once accepted, and only when configured', async () => {
    const subscribeUrl = `https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=${TOPIC_A}&Token=fake-token`;
    const confirmation = () =>
      snsMessage({
        Type: 'SubscriptionConfirmation',
        TopicArn: TOPIC_A,
        Message: 'You have chosen to subscribe to the topic.',
        SubscribeURL: subscribeUrl,
        Token: 'fake-token',
      });
    const { verify, confirmations } = verifier({ confirmSubscriptions: true });
    const verified = await verify(confirmation());
    expect(verified.events).toEqual([]);
    // Nothing is visited until the receiver accepts the request (it may still be a replay).
    expect(confirmations).toEqual([]);
    expect(await verified.afterAccept!()).toEqual({ subscription: 'confirmed', topic: TOPIC_A });
    expect(confirmations).toEqual([subscribeUrl]);

    const evil = snsMessage({
      Type: 'SubscriptionConfirmation',
      TopicArn: TOPIC_A,
      Message: 'x',
      SubscribeURL: 'https://evil.example/confirm',
      Token: 'fake-token',
    });
    expect((await refusal(verify(evil))).code).toBe('webhook_malformed');

    // A verifier not configured to confirm refuses, without visiting anything.
    const strict = verifier();
    const refused = await refusal(strict.verify(confirmation()));
    expect(refused).toMatchObject({ code: 'webhook_subscription_refused', statusCode: 403 });
    expect(strict.confirmations).toEqual([]);
    expect(confirmations).toHaveLength(1);
  });

  it('signs the fields SNS documents, in its order, leaving out a missing Subject', () => {
    const m = notification(sesDelivery);
    expect(snsStringToSign(m as never)).toBe(
      `Message\n${m.Message}\nMessageId\n${m.MessageId}\nTimestamp\n${m.Timestamp}\nTopicArn\n${TOPIC_A}\nType\nNotification\n`,
    );
  });
});
