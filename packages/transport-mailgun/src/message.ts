import { readFile } from 'node:fs/promises';
import { formatAddress, type PreparedAttachment, type PreparedMessage } from '@mailvia/core';

/**
 * The `v:` variable that carries the message's RFC 5322 Message-ID, so events (webhooks) are
 * matched back to the message whatever id Mailgun gives it.
 */
export const MESSAGE_ID_VARIABLE = 'v:mailvia-message-id';
/** The `v:` variable that carries the message's idempotency key, when it has one. */
export const IDEMPOTENCY_KEY_VARIABLE = 'v:mailvia-idempotency-key';

/** An attachment as `mailgun.js` takes it: a typed Blob keeps its content type in the form. */
export interface MailgunFile {
  data: Blob;
  filename: string;
}

/** The form fields of `POST /v3/{domain}/messages`, as Mailvia fills them. */
export interface MailgunMessageFields {
  from: string;
  to: string[];
  cc?: string[];
  bcc?: string[];
  subject?: string;
  text?: string;
  html?: string;
  attachment?: MailgunFile[];
  inline?: MailgunFile[];
  'o:tag'?: string[];
  'o:testmode'?: 'yes';
  /** `h:Message-Id`, `h:Reply-To`, `h:X-…` headers and `v:…` variables. */
  [header: `h:${string}` | `v:${string}`]: string;
}

async function bytes(a: PreparedAttachment, signal?: AbortSignal): Promise<Uint8Array> {
  if (a.content !== undefined) {
    return typeof a.content === 'string' ? Buffer.from(a.content, a.encoding ?? 'utf8') : a.content;
  }
  if (a.path !== undefined) return readFile(a.path, signal ? { signal } : {});
  if (a.href !== undefined) {
    const res = await fetch(a.href, signal ? { signal } : {});
    if (!res.ok) throw new Error(`attachment ${a.href}: HTTP ${res.status}`);
    return new Uint8Array(await res.arrayBuffer());
  }
  return new Uint8Array(0);
}

/**
 * Turns a prepared message into Mailgun's form fields: addresses with their names, text and
 * HTML, attachments (inline ones, with a `cid`, as `inline` named by the cid), tags as `o:tag`,
 * headers as `h:…` (with our Message-ID and Reply-To), metadata as `v:…` variables plus the
 * Message-ID and idempotency key.
 */
export async function toMailgunFields(
  message: PreparedMessage,
  options: { testMode?: boolean; signal?: AbortSignal } = {},
): Promise<MailgunMessageFields> {
  const attachment: MailgunFile[] = [];
  const inline: MailgunFile[] = [];
  for (const [i, a] of message.attachments.entries()) {
    const data = new Blob([await bytes(a, options.signal)], a.contentType ? { type: a.contentType } : {});
    // Mailgun names an inline part by its file name: the HTML refers to it as cid:<file name>
    if (a.cid !== undefined) inline.push({ data, filename: a.cid });
    else attachment.push({ data, filename: a.filename ?? `attachment-${i + 1}` });
  }
  const fields: MailgunMessageFields = {
    from: formatAddress(message.from),
    to: message.to.map(formatAddress),
    ...(message.cc.length ? { cc: message.cc.map(formatAddress) } : {}),
    ...(message.bcc.length ? { bcc: message.bcc.map(formatAddress) } : {}),
    ...(message.subject ? { subject: message.subject } : {}),
    ...(message.text ? { text: message.text } : {}),
    ...(message.html ? { html: message.html } : {}),
    ...(attachment.length ? { attachment } : {}),
    ...(inline.length ? { inline } : {}),
    ...(message.tags.length ? { 'o:tag': [...new Set(message.tags)] } : {}),
    ...(options.testMode ? { 'o:testmode': 'yes' as const } : {}),
  };
  fields['h:Message-Id'] = message.messageId;
  if (message.replyTo.length) fields['h:Reply-To'] = message.replyTo.map(formatAddress).join(', ');
  for (const [name, value] of Object.entries(message.headers)) fields[`h:${name}`] = value;
  for (const [key, value] of Object.entries(message.metadata)) fields[`v:${key}`] = value;
  fields[MESSAGE_ID_VARIABLE] = message.messageId;
  if (message.idempotencyKey !== undefined) fields[IDEMPOTENCY_KEY_VARIABLE] = message.idempotencyKey;
  return fields;
}
