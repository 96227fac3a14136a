import { generateKeyPairSync, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type VerifiedWebhook, WebhookRefusal, type WebhookRequest } from '@mailvia/core';
import { describe, expect, it } from 'vitest';
import {
  normaliseSendgridEvent,
  SENDGRID_SIGNATURE_HEADER,
  SENDGRID_TIMESTAMP_HEADER,
  sendgridWebhook,
  verifySendgridSignature,
} from '../src/index.js';
import { malleate, sendgridKeys } from './webhook-signing.js';

/** SendGrid's published Event Webhook material (shared/contracts/sendgrid). */
const CONTRACTS = join(import.meta.dirname, '../../../../shared/contracts');
const contract = (path: string) => JSON.parse(readFileSync(join(CONTRACTS, path), 'utf8'));
const vector = contract('sendgrid/event-webhook-signature-vector.json');
const examples = contract('sendgrid/event-webhook-examples.json');

// Keys of two organisations (made here).
const orgA = sendgridKeys();
const orgB = sendgridKeys();

function signed(
  keys: ReturnType<typeof sendgridKeys>,
  body: string,
  timestamp = String(Math.floor(Date.now() / 1000)),
) {
  const signature = sign('sha256', Buffer.concat([Buffer.from(timestamp), Buffer.from(body)]), keys.privateKey);
  return {
    rawBody: Buffer.from(body),
    headers: { [SENDGRID_SIGNATURE_HEADER]: signature.toString('base64'), [SENDGRID_TIMESTAMP_HEADER]: timestamp },
  };
}

const request = (r: Pick<WebhookRequest, 'rawBody' | 'headers'>, secrets: string[]): WebhookRequest => ({
  ...r,
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

describe('SendGrid Signed Event Webhook', () => {
  it('its own test vector verifies, and each of its negative cases does not', () => {
    expect(verifySendgridSignature(vector.public_key, vector.timestamp, vector.payload, vector.signature)).toBe(true);
    for (const c of vector.negative_cases) {
      const ok = verifySendgridSignature(
        c.public_key ?? vector.public_key,
        c.timestamp ?? vector.timestamp,
        c.payload ?? vector.payload,
        c.signature ?? vector.signature,
      );
      expect(ok, c.name).toBe(false);
    }
  });

  it("accepts SendGrid's signed test vector through the verifier, with its signing time", async () => {
    const verified = await sendgridWebhook().verify(
      request(
        {
          rawBody: Buffer.from(vector.payload),
          // Header names in any case, as Node hands them over lower-cased.
          headers: { [SENDGRID_SIGNATURE_HEADER]: vector.signature, [SENDGRID_TIMESTAMP_HEADER]: vector.timestamp },
        },
        [vector.public_key],
      ),
    );
    expect(verified.signedAt).toBe(Number(vector.timestamp) * 1000);
    expect(verified.events).toMatchObject([{ type: 'unknown', providerEvent: 'test_event' }]);
  });

  it('maps every documented event type of a batch, taken byte for byte', async () => {
    // Pretty-printed as SendGrid's docs show it: the signature covers these exact bytes.
    const body = JSON.stringify(examples.all_types_batch, null, 2);
    const { events } = await sendgridWebhook().verify(request(signed(orgA, body), [orgA.publicKey]));
    expect(events.map((e) => `${e.providerEvent}=${e.type}`)).toEqual([
      'processed=queued',
      'deferred=deferred',
      'delivered=delivered',
      'open=opened',
      'click=clicked',
      'bounce=bounced',
      'dropped=rejected',
      'spamreport=complained',
      'unsubscribe=unsubscribed',
      'group_unsubscribe=unsubscribed',
      'group_resubscribe=unknown',
    ]);
    expect(events.find((e) => e.type === 'bounced')).toMatchObject({
      recipient: 'example@test.com',
      permanent: true,
      reason: '500 unknown recipient',
      status: '5.0.0',
      messageId: '<14c5d75ce93.dfd.64b469@ismtpd-555>',
      occurredAt: new Date(1513299569 * 1000).toISOString(),
    });
    expect(events.find((e) => e.type === 'clicked')!.url).toBe('http://www.sendgrid.com/');
  });

  it('gives the id the send API returned (X-Message-Id), without the ".filter…" part, and a blocked bounce is not permanent', () => {
    const event = normaliseSendgridEvent({
      ...examples.first_example_by_event.bounce,
      sg_message_id: '14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0', // X-Message-Id + ".filter…"
      type: 'blocked',
    });
    expect(event).toMatchObject({ providerMessageId: '14c5d75ce93.dfd.64b469', permanent: false });
  });

  it("refuses a forged body, another organisation's key and a request without the signature headers", async () => {
    const body = JSON.stringify([examples.first_example_by_event.bounce]);
    const good = signed(orgA, body);
    const forged = { ...good, rawBody: Buffer.from(body.replace('example@test.com', 'victim@test.com')) };
    expect(await refusal(sendgridWebhook().verify(request(forged, [orgA.publicKey])))).toMatchObject({
      code: 'webhook_signature_invalid',
      statusCode: 401,
    });
    // Signed by school-b's account, checked with school-a's key.
    const other = await refusal(sendgridWebhook().verify(request(signed(orgB, body), [orgA.publicKey])));
    expect(other.code).toBe('webhook_signature_invalid');
    const unsigned = await refusal(
      sendgridWebhook().verify(request({ rawBody: good.rawBody, headers: {} }, [orgA.publicKey])),
    );
    expect(unsigned.message).toMatch(/Signed Event Webhook/);
    // During a key rotation both keys are tried.
    await expect(
      sendgridWebhook().verify(request(signed(orgB, body), [orgA.publicKey, orgB.publicKey])),
    ).resolves.toMatchObject({ events: [{ type: 'bounced' }] });
  });

  it('refuses a signed body that is not a list of events, and a timestamp that is not seconds', async () => {
    const notEvents = await refusal(sendgridWebhook().verify(request(signed(orgA, '"hello"'), [orgA.publicKey])));
    expect(notEvents.code).toBe('webhook_malformed');
    const notJson = await refusal(sendgridWebhook().verify(request(signed(orgA, '[{'), [orgA.publicKey])));
    expect(notJson.code).toBe('webhook_malformed');
    const odd = await refusal(sendgridWebhook().verify(request(signed(orgA, '[]', '1e9'), [orgA.publicKey])));
    expect(odd.message).toMatch(/not a number of seconds/);
  });

  it("keys replays on the signed bytes, so the signature's other valid ECDSA form is the same request", async () => {
    const body = JSON.stringify([examples.first_example_by_event.delivered]);
    const first = signed(orgA, body);
    const signature = first.headers[SENDGRID_SIGNATURE_HEADER]!;
    const twin = malleate(signature);
    expect(twin).not.toBe(signature);
    const ts = first.headers[SENDGRID_TIMESTAMP_HEADER]!;
    expect(verifySendgridSignature(orgA.publicKey, ts, body, twin)).toBe(true);
    const a = await sendgridWebhook().verify(request(first, [orgA.publicKey]));
    const b = await sendgridWebhook().verify(
      request({ rawBody: first.rawBody, headers: { ...first.headers, [SENDGRID_SIGNATURE_HEADER]: twin } }, [
        orgA.publicKey,
      ]),
    );
    expect(b.replayId).toBe(a.replayId);
    const again = await sendgridWebhook().verify(request(signed(orgA, `${body} `), [orgA.publicKey]));
    expect(again.replayId).not.toBe(a.replayId);
  });

  it("says the organisation's key is not a key (a 500: SendGrid retries) without echoing it", async () => {
    const body = '[]';
    const bad = 'fake-not-a-key-aaaa';
    const err = await refusal(sendgridWebhook().verify(request(signed(orgA, body), [bad])));
    expect(err).toMatchObject({ code: 'internal', statusCode: 500 });
    expect(err.message).not.toContain(bad);
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'pem', type: 'spki' });
    const notP256 = await refusal(sendgridWebhook().verify(request(signed(orgA, body), [rsa.toString()])));
    expect(notP256.message).toMatch(/P-256/);
  });

  it('names its URL segment and tolerance as asked', () => {
    expect(sendgridWebhook()).toMatchObject({ provider: 'sendgrid' });
    expect(sendgridWebhook().tolerance).toBeUndefined();
    expect(sendgridWebhook({ provider: 'sendgrid-eu', tolerance: 60 })).toMatchObject({
      provider: 'sendgrid-eu',
      tolerance: 60,
    });
  });
});
