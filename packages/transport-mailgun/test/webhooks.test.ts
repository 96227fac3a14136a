import { createHmac, randomBytes } from 'node:crypto';
import { type VerifiedWebhook, WebhookRefusal, type WebhookRequest } from '@mailvia/core';
import { describe, expect, it } from 'vitest';
import { mailgunWebhook, normaliseMailgunEvent, verifyMailgunSignature } from '../src/index.js';
import { contract, mailgunDocEvent } from './webhook-fixtures.js';

const vector = contract('mailgun/webhook-signature-vector.selfmade.json');
const KEY_A = 'fake-mailgun-signing-key-aaaa';
const KEY_B = 'fake-mailgun-signing-key-bbbb';

/** A JSON webhook body signed as Mailgun documents it: hex HMAC-SHA256(key, timestamp + token). */
function signedBody(eventData: unknown, key = KEY_A, timestamp = String(Math.floor(Date.now() / 1000))) {
  const token = randomBytes(25).toString('hex');
  const signature = createHmac('sha256', key)
    .update(timestamp + token)
    .digest('hex');
  return { token, body: JSON.stringify({ signature: { timestamp, token, signature }, 'event-data': eventData }) };
}

const request = (body: string, secrets: string[]): WebhookRequest => ({
  rawBody: Buffer.from(body),
  headers: { 'content-type': 'application/json' },
  secrets,
  organisation: 'school-a',
});

async function refusal(promise: Promise<VerifiedWebhook>): Promise<WebhookRefusal> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!WebhookRefusal.isInstance(err)) throw new Error(`expected a WebhookRefusal, got ${String(err)}`);
  return err;
}

describe('Mailgun webhooks', () => {
  it('the documented HMAC scheme verifies the vector; a wrong key or token, or a signature not in hex, does not', () => {
    const { signing_key, timestamp, token, signature } = vector;
    expect(verifyMailgunSignature(signing_key, timestamp, token, signature)).toBe(true);
    expect(verifyMailgunSignature('another-fake-key', timestamp, token, signature)).toBe(false);
    expect(verifyMailgunSignature(signing_key, timestamp, `${token}x`, signature)).toBe(false);
    expect(verifyMailgunSignature(signing_key, timestamp, token, 'not-hex')).toBe(false);
  });

  it("accepts the vector's example body, with its token as the replay key and its time", async () => {
    const verified = await mailgunWebhook().verify(
      request(JSON.stringify(vector.example_webhook_body), [vector.signing_key]),
    );
    expect(verified).toMatchObject({ replayId: vector.token, signedAt: Number(vector.timestamp) * 1000 });
    expect(verified.events).toMatchObject([
      { type: 'delivered', recipient: 'alice@example.com', eventId: 'DACSsAdVSeGpLid7TN03WA' },
    ]);
  });

  it("maps the events of Mailgun's documentation", async () => {
    const samples: [string, string][] = [
      ['Accepted', 'queued'],
      ['Delivered', 'delivered'],
      ['Failed (Permanent)', 'rejected'],
      ['Failed (Permanent, Delayed Bounce)', 'bounced'],
      ['Failed (Temporary)', 'deferred'],
      ['Opened', 'opened'],
      ['Clicked', 'clicked'],
      ['Unsubscribed', 'unsubscribed'],
      ['Complained', 'complained'],
      ['Rejected', 'rejected'],
      ['Stored', 'unknown'],
    ];
    const events = [];
    for (const [title] of samples) {
      const verified = await mailgunWebhook().verify(request(signedBody(mailgunDocEvent(title)).body, [KEY_A]));
      events.push(...verified.events);
    }
    expect(events.map((e) => e.type)).toEqual(samples.map(([, t]) => t));
    expect(events[3]).toMatchObject({
      recipient: 'christest123@test.com',
      permanent: true,
      status: '5.1.1',
      messageId: '<20221019211537.93011d31ea99c5a8@test.com>',
      // Mailgun's send API answers with the Message-ID as the message's id.
      providerMessageId: '<20221019211537.93011d31ea99c5a8@test.com>',
    });
    expect(events[6]!.url).toBe('http://example.com/signup');
    expect(normaliseMailgunEvent(mailgunDocEvent('Failed (Temporary)')).permanent).toBeUndefined();
  });

  it('refuses a wrong key, a body without a signature, a timestamp that is not seconds and a body without event data', async () => {
    const event = mailgunDocEvent('Delivered');
    const forged = await refusal(mailgunWebhook().verify(request(signedBody(event, 'fake-wrong-key').body, [KEY_A])));
    expect(forged).toMatchObject({ code: 'webhook_signature_invalid', statusCode: 401 });
    const unsigned = await refusal(mailgunWebhook().verify(request(JSON.stringify({ 'event-data': event }), [KEY_A])));
    expect(unsigned.message).toMatch(/no signature\.timestamp/);
    const odd = await refusal(mailgunWebhook().verify(request(signedBody(event, KEY_A, '1e9').body, [KEY_A])));
    expect(odd.message).toMatch(/not a number of seconds/);
    const empty = await refusal(mailgunWebhook().verify(request(signedBody(null).body, [KEY_A])));
    expect(empty.code).toBe('webhook_malformed');
    const notJson = await refusal(mailgunWebhook().verify(request('signature=x', [KEY_A])));
    expect(notJson.code).toBe('webhook_malformed');
  });

  it("tries each of the organisation's keys during a rotation", async () => {
    const { body, token } = signedBody(mailgunDocEvent('Delivered'), KEY_B);
    await expect(mailgunWebhook().verify(request(body, [KEY_A, KEY_B]))).resolves.toMatchObject({ replayId: token });
  });

  it('names its URL segment and tolerance as asked', () => {
    expect(mailgunWebhook()).toMatchObject({ provider: 'mailgun' });
    expect(mailgunWebhook().tolerance).toBeUndefined();
    expect(mailgunWebhook({ provider: 'mailgun-eu', tolerance: 60 })).toMatchObject({
      provider: 'mailgun-eu',
      tolerance: 60,
    });
  });
});
