import { describe, expect, it } from 'vitest';
import { MailError, MessageValidationError, prepareMessage } from '../src/index.js';

const base = { from: 'school@example.org', to: 'parent@example.org', subject: 'Hi', text: 'Hello' };

function fieldOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(MessageValidationError);
    expect(MailError.isInstance(e)).toBe(true);
    expect((e as MessageValidationError).kind).toBe('refused');
    expect((e as MessageValidationError).phase).toBe('validate');
    return (e as MessageValidationError).field;
  }
  throw new Error('expected a MessageValidationError');
}

describe('message validation at the door', () => {
  it('prepares a valid message: Message-ID, date, envelope with bcc, no duplicates', () => {
    const m = prepareMessage({ ...base, cc: ['parent@example.org', 'teacher@example.org'], bcc: 'audit@example.org' });
    expect(m.messageId).toMatch(/^<[0-9a-f-]+@example\.org>$/);
    expect(m.envelope).toEqual({
      from: 'school@example.org',
      to: ['parent@example.org', 'teacher@example.org', 'audit@example.org'],
    });
    expect(Number.isNaN(Date.parse(m.date))).toBe(false);
  });

  it('is plain serialisable data: JSON round trip prepares to the same message', () => {
    const m = prepareMessage({ ...base, tags: ['welcome'], metadata: { user: '42' }, idempotencyKey: 'k-1' });
    const again = prepareMessage(JSON.parse(JSON.stringify(m)));
    expect(again).toEqual(m);
  });

  it.each([
    ['subject', { ...base, subject: 'Hi\r\nBcc: victim@example.org' }],
    ['headers.X-Tag', { ...base, headers: { 'X-Tag': 'a\nb' } }],
    ['from.name', { ...base, from: { name: 'Evil\r\nBcc: x@example.org', address: 'a@example.org' } }],
    ['to', { ...base, to: 'a@example.org\0' }],
    ['metadata.k', { ...base, metadata: { k: 'v\r\n' } }],
    ['attachments[0].filename', { ...base, attachments: [{ filename: 'a\r\n.pdf', content: 'x' }] }],
  ])('refuses CR/LF/NUL in %s', (field, message) => {
    expect(fieldOf(() => prepareMessage(message as never))).toBe(field);
  });

  it.each([
    ['to', 'not-an-address'],
    ['to', 'a@'],
    ['to', 'a@b'],
    ['to', { address: 'a b@example.org' }],
    ['to', 'a@-bad-.example.org'],
    ['to', 'a@example.123'],
  ])('refuses a malformed address in %s: %j', (field, to) => {
    expect(fieldOf(() => prepareMessage({ ...base, to }))).toBe(field);
  });

  it('names the index of a bad address in a list', () => {
    expect(fieldOf(() => prepareMessage({ ...base, to: ['ok@example.org', 'broken'] }))).toBe('to[1]');
  });

  it('converts IDN domains to punycode for the envelope, keeps the display name', () => {
    const m = prepareMessage({ ...base, from: 'École <direction@école.example>', to: 'Zoë <zoe@bücher.example>' });
    expect(m.envelope.from).toBe('direction@xn--cole-9oa.example');
    expect(m.envelope.to).toEqual(['zoe@xn--bcher-kva.example']);
    expect(m.to[0]).toEqual({ name: 'Zoë', address: 'zoe@xn--bcher-kva.example' });
  });

  it('refuses a message with no recipient', () => {
    expect(fieldOf(() => prepareMessage({ from: base.from, subject: 'x', text: 'y' }))).toBe('to');
  });

  it('refuses an attachment over the configured size', () => {
    const content = new Uint8Array(2048);
    expect(fieldOf(() => prepareMessage({ ...base, attachments: [{ content }] }, { maxAttachmentSize: 1024 }))).toBe(
      'attachments[0].content',
    );
    expect(() => prepareMessage({ ...base, attachments: [{ content }] }, { maxAttachmentSize: 4096 })).not.toThrow();
  });

  it('refuses path and href attachments unless the application allows them', () => {
    expect(fieldOf(() => prepareMessage({ ...base, attachments: [{ path: '/etc/passwd' }] }))).toBe(
      'attachments[0].path',
    );
    expect(fieldOf(() => prepareMessage({ ...base, attachments: [{ href: 'http://169.254.169.254/' }] }))).toBe(
      'attachments[0].href',
    );
    expect(() =>
      prepareMessage({ ...base, attachments: [{ path: '/tmp/x' }] }, { allowFileAttachments: true }),
    ).not.toThrow();
  });

  it('refuses structural headers set by hand and bad header names', () => {
    expect(fieldOf(() => prepareMessage({ ...base, headers: { Bcc: 'x@example.org' } }))).toBe('headers.Bcc');
    expect(fieldOf(() => prepareMessage({ ...base, headers: { 'Bad Name': 'x' } }))).toBe('headers.Bad Name');
  });

  it('refuses unknown fields and wrong types, naming them', () => {
    expect(fieldOf(() => prepareMessage({ ...base, subjcet: 'typo' } as never))).toBe('message');
    expect(fieldOf(() => prepareMessage({ ...base, subject: 42 } as never))).toBe('subject');
  });

  it('refuses a malformed Message-ID but keeps a good one', () => {
    expect(fieldOf(() => prepareMessage({ ...base, messageId: 'no-brackets@x' }))).toBe('messageId');
    expect(prepareMessage({ ...base, messageId: '<abc@example.org>' }).messageId).toBe('<abc@example.org>');
  });
});
