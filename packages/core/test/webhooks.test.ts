import { describe, expect, it } from 'vitest';
import {
  bracketedMessageId,
  isoFromEpochSeconds,
  parseWebhookJson,
  payloadObject,
  payloadString,
  WEBHOOK_EVENT_TYPES,
  WebhookRefusal,
  webhookHeader,
} from '../src/index.js';

describe('the webhook contract', () => {
  it('a refusal carries its code and the HTTP status a receiver answers with, and is known across copies', () => {
    const refusal = new WebhookRefusal('webhook_signature_invalid', 'The signature does not match.');
    expect(refusal).toMatchObject({ code: 'webhook_signature_invalid', statusCode: 401, name: 'WebhookRefusal' });
    expect(WebhookRefusal.isInstance(refusal)).toBe(true);
    // Another copy of the package marks its refusals with the same registered symbol.
    const foreign = Object.assign(new Error('x'), { [Symbol.for('mailvia.webhookRefusal')]: true });
    expect(WebhookRefusal.isInstance(foreign)).toBe(true);
    expect(WebhookRefusal.isInstance(new Error('webhook_signature_invalid'))).toBe(false);
    expect(new WebhookRefusal('internal', 'later').statusCode).toBe(500);
  });

  it('a body that is not JSON is refused as malformed, naming the provider and not echoing the body', () => {
    const err = (() => {
      try {
        parseWebhookJson(Buffer.from('{"secret": fake-secret-aaaa'), 'Acme');
      } catch (e) {
        return e;
      }
    })();
    expect(WebhookRefusal.isInstance(err)).toBe(true);
    expect(err).toMatchObject({ code: 'webhook_malformed', message: 'The Acme body is not valid JSON.' });
    expect(parseWebhookJson(Buffer.from('[{"a":1}]'), 'Acme')).toEqual([{ a: 1 }]);
  });

  it('reads payloads without trusting their shape', () => {
    expect(webhookHeader({ 'x-sig': ['a', 'b'] }, 'X-Sig')).toBe('a');
    expect(webhookHeader({}, 'X-Sig')).toBeUndefined();
    expect(isoFromEpochSeconds('1513299569')).toBe('2017-12-15T00:59:29.000Z');
    expect(isoFromEpochSeconds(1513299569.5)).toBe('2017-12-15T00:59:29.500Z');
    expect(bracketedMessageId(' abc@example.com ')).toBe('<abc@example.com>');
    expect(bracketedMessageId('<abc@example.com>')).toBe('<abc@example.com>');
    expect(bracketedMessageId(42)).toBeUndefined();
    expect(payloadObject([1])).toEqual({});
    expect(payloadObject(null)).toEqual({});
    expect(payloadString(550)).toBe('550');
    expect(payloadString(Number.NaN)).toBeUndefined();
    expect(WEBHOOK_EVENT_TYPES).toContain('bounced');
  });
});
