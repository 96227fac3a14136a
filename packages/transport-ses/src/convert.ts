import type { SendEmailCommandInput } from '@aws-sdk/client-sesv2';
import { type Address, composeMime, type PreparedMessage } from '@mailvia/core';

/** SES allows only these characters in EmailTags names and values, up to 256 of them. */
const TAG_CHARS = /[^A-Za-z0-9_-]/g;
const TAG_MAX = 256;

/**
 * Makes a text fit SES's tag rules: accents are dropped (`été` → `ete`), any other character
 * outside `A-Z a-z 0-9 _ -` becomes `_`, and the result is cut at 256 characters.
 */
export function sanitizeTag(value: string): string {
  return value.normalize('NFKD').replace(/\p{M}/gu, '').replace(TAG_CHARS, '_').slice(0, TAG_MAX);
}

/**
 * The message's tags and metadata as SES `EmailTags`: each tag becomes `{ Name: tag, Value:
 * 'true' }`, each metadata pair `{ Name: key, Value: value }`, both sanitised. A name seen twice
 * keeps its first value (SES wants unique names).
 */
export function emailTags(message: PreparedMessage): { Name: string; Value: string }[] {
  const out = new Map<string, string>();
  const add = (rawName: string, rawValue: string) => {
    const name = sanitizeTag(rawName);
    const value = sanitizeTag(rawValue);
    if (!name || !value || out.has(name)) return;
    out.set(name, value);
  };
  for (const tag of message.tags) add(tag, 'true');
  for (const [k, v] of Object.entries(message.metadata)) add(k, v);
  return [...out].map(([Name, Value]) => ({ Name, Value }));
}

/** An address for an SES field: `Name <a@b>` with the name as an RFC 2047 word when not ASCII. */
function sesAddress(a: Address): string {
  if (!a.name) return a.address;
  const ascii = /^[\x20-\x7e]*$/.test(a.name);
  const name = ascii ? JSON.stringify(a.name) : `=?UTF-8?B?${Buffer.from(a.name).toString('base64')}?=`;
  return `${name} <${a.address}>`;
}

/** What {@link toSendEmailInput} needs besides the message. */
export interface ConvertOptions {
  content: 'raw' | 'simple';
  configurationSet?: string;
  tags: boolean;
  fromArn?: string;
}

/**
 * The SendEmail request for a message. `raw` sends the bytes of core's `composeMime` (the same
 * bytes every SMTP route sends) with the envelope recipients as `Destination` (Bcc included,
 * absent from the headers). `simple` lets SES build the MIME; a message with attachments is
 * still sent raw, since the SES v2 model's `Simple` content carries none.
 */
export async function toSendEmailInput(message: PreparedMessage, o: ConvertOptions): Promise<SendEmailCommandInput> {
  const destination = {
    ...(message.to.length ? { ToAddresses: message.to.map((a) => a.address) } : {}),
    ...(message.cc.length ? { CcAddresses: message.cc.map((a) => a.address) } : {}),
    ...(message.bcc.length ? { BccAddresses: message.bcc.map((a) => a.address) } : {}),
  };
  const tags = o.tags ? emailTags(message) : [];
  const common = {
    Destination: destination,
    ...(o.configurationSet ? { ConfigurationSetName: o.configurationSet } : {}),
    ...(tags.length ? { EmailTags: tags } : {}),
    ...(o.fromArn ? { FromEmailAddressIdentityArn: o.fromArn } : {}),
  };
  if (o.content === 'raw' || message.attachments.length > 0) {
    return {
      FromEmailAddress: message.envelope.from,
      ...common,
      Content: { Raw: { Data: await composeMime(message) } },
    };
  }
  const headers = Object.entries(message.headers).map(([Name, Value]) => ({ Name, Value }));
  const utf8 = (Data: string) => ({ Data, Charset: 'UTF-8' });
  const body =
    message.text === undefined && message.html === undefined
      ? { Text: utf8('') }
      : {
          ...(message.text !== undefined ? { Text: utf8(message.text) } : {}),
          ...(message.html !== undefined ? { Html: utf8(message.html) } : {}),
        };
  return {
    FromEmailAddress: sesAddress(message.from),
    ...common,
    ...(message.replyTo.length ? { ReplyToAddresses: message.replyTo.map(sesAddress) } : {}),
    Content: {
      Simple: {
        Subject: utf8(message.subject),
        Body: body,
        ...(headers.length ? { Headers: headers } : {}),
      },
    },
  };
}
