import { readFileSync } from 'node:fs';
import { prepareMessage } from '@mailvia/core';
import { type HttpExchange, type HttpPeer, reply, startHttpPeer } from '@mailvia/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { mailgun } from '../src/index.js';

/**
 * Mailgun's ORIGINAL contract (not the relaxed copy Prism serves) checked against the multipart
 * body the route really sends: every field is one the operation's schema names (or a documented
 * `h:` header / `v:` variable), arrays may repeat and scalars may not, files are files and text is
 * text, enum values are allowed ones, and the required fields are there.
 */
const SPEC = '/work/shared/contracts/mailgun/mailgun-openapi.yaml';
const KEY = 'fake-mailgun-key-0123456789abcdef-cccccccc-dddddddd';
const DOMAIN = 'mg.example.org';

interface Schema {
  type?: string;
  format?: string;
  enum?: string[];
  items?: Schema;
  properties?: Record<string, Schema>;
  required?: string[];
  $ref?: string;
}
interface Operation {
  requestBody: { content: Record<string, { schema: Schema }> };
  security?: Record<string, unknown>[];
}
interface Spec {
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Schema>; securitySchemes: Record<string, { type: string; scheme?: string }> };
}

const spec = parse(readFileSync(SPEC, 'utf8')) as Spec;
const resolve = (s: Schema): Schema => (s.$ref ? resolve(spec.components.schemas[s.$ref.split('/').at(-1)!]!) : s);
const operation = spec.paths['/v3/{domain_name}/messages']!.post!;
const schema = resolve(operation.requestBody.content['multipart/form-data']!.schema);

/** Problems of a multipart form against the messages schema; empty when it conforms. */
async function violations(exchange: HttpExchange): Promise<string[]> {
  const problems: string[] = [];
  const form = await new Response(exchange.body, {
    headers: { 'content-type': String(exchange.headers['content-type']) },
  }).formData();
  const names = [...new Set([...form.keys()])];
  for (const name of names) {
    const values = form.getAll(name);
    const prop = schema.properties?.[name];
    if (!prop) {
      // the schema lists `h:X-My-Header` and `v:my-var` as the forms of custom headers and variables
      if (!/^h:[!-9;-~]+$/.test(name) && !/^v:.+$/.test(name)) problems.push(`${name}: not a field of the operation`);
      else if (values.length !== 1 || typeof values[0] !== 'string') problems.push(`${name}: must be one text value`);
      continue;
    }
    const item = prop.type === 'array' ? resolve(prop.items ?? {}) : prop;
    if (prop.type !== 'array' && values.length !== 1)
      problems.push(`${name}: one value expected, got ${values.length}`);
    for (const v of values) {
      const isFile = typeof v !== 'string';
      if (item.format === 'binary' && !isFile) problems.push(`${name}: must be a file part`);
      if (item.format !== 'binary' && isFile) problems.push(`${name}: must be a text part`);
      if (item.enum && !item.enum.includes(String(v)))
        problems.push(`${name}: ${String(v)} is not one of ${item.enum}`);
    }
  }
  for (const r of schema.required ?? []) if (!form.has(r)) problems.push(`${r}: required`);
  return problems;
}

let peer: HttpPeer;
beforeAll(async () => {
  peer = await startHttpPeer((_ex, res) =>
    reply(res, 200, { id: '<1@mg.example.org>', message: 'Queued. Thank you.' }),
  );
});
afterAll(() => peer.close());

const send = async (message: Parameters<typeof prepareMessage>[0], testMode = false) => {
  await mailgun({ apiKey: KEY, domain: DOMAIN, baseUrl: peer.url, testMode }).send(prepareMessage(message));
  return peer.requests.at(-1)!;
};

describe("the multipart body against Mailgun's original contract (mailgun-openapi.yaml)", () => {
  it('the contract is the one expected: multipart POST /v3/{domain_name}/messages, basic auth', () => {
    expect(Object.keys(operation.requestBody.content)).toEqual(['multipart/form-data']);
    expect(schema.required).toEqual(expect.arrayContaining(['from', 'to', 'subject']));
    expect(schema.properties?.to?.type).toBe('array');
    expect(schema.properties?.attachment?.items?.format).toBe('binary');
    const [scheme] = Object.keys(operation.security?.[0] ?? {});
    expect(spec.components.securitySchemes[scheme!]).toMatchObject({ type: 'http', scheme: 'basic' });
  });

  it('a message using every mapped field conforms', async () => {
    const got = await send(
      {
        from: { name: 'École A', address: `school@${DOMAIN}` },
        to: ['parent@example.org', 'Zoë <zoe@example.org>'],
        cc: ['teacher@example.org', 'head@example.org'],
        bcc: 'audit@example.org',
        replyTo: 'office@example.org',
        subject: 'Bulletin',
        text: 'Bonjour',
        html: '<p>Bonjour <img src="cid:logo"></p>',
        headers: { 'X-School': 'A', 'List-Unsubscribe': '<mailto:unsubscribe@example.org>' },
        tags: ['bulletin', 'term-1'],
        metadata: { school: 'a', pupil: '42' },
        idempotencyKey: 'bulletin-42',
        attachments: [
          { filename: 'report.pdf', content: Buffer.from('%PDF-1.4 fake'), contentType: 'application/pdf' },
          { filename: 'notes.txt', content: 'notes' },
          { cid: 'logo', content: Buffer.from([0x89, 0x50]), contentType: 'image/png' },
        ],
      },
      true,
    );
    expect(got.url).toBe(`/v3/${DOMAIN}/messages`);
    expect(got.headers.authorization).toBe(`Basic ${Buffer.from(`api:${KEY}`).toString('base64')}`);
    expect(await violations(got)).toEqual([]);
  });

  it('a minimal message conforms (one recipient, text only)', async () => {
    const got = await send({ from: `school@${DOMAIN}`, to: 'parent@example.org', subject: 'Hi', text: '.' });
    expect(await violations(got)).toEqual([]);
  });

  it('the check finds what breaks the contract (so a conforming body means something)', async () => {
    const form = new FormData();
    form.append('from', 'a@example.org');
    form.append('from', 'b@example.org');
    form.append('to', new Blob(['x']), 'to.txt');
    form.append('attachment', 'not a file');
    form.append('o:testmode', 'maybe');
    form.append('sender', 'nobody');
    const encoded = new Response(form);
    const problems = await violations({
      method: 'POST',
      url: '/v3/x/messages',
      headers: { 'content-type': encoded.headers.get('content-type')! },
      body: Buffer.from(await encoded.arrayBuffer()),
    });
    expect(problems).toEqual(
      expect.arrayContaining([
        'from: one value expected, got 2',
        'to: must be a text part',
        'attachment: must be a file part',
        'o:testmode: maybe is not one of yes',
        'sender: not a field of the operation',
        'subject: required',
      ]),
    );
  });
});
