import { readFile } from 'node:fs/promises';
import type { Address, PreparedAttachment, PreparedMessage } from '@mailvia/core';

/**
 * The custom arg that carries the message's RFC 5322 Message-ID. SendGrid writes its own
 * Message-ID header, so events (webhooks) are matched back to the message through this arg.
 */
export const MESSAGE_ID_ARG = 'mailvia_message_id';
/** The custom arg that carries the message's idempotency key, when it has one. */
export const IDEMPOTENCY_KEY_ARG = 'mailvia_idempotency_key';

/** An address as the v3 API takes it. */
export interface SendgridAddress {
  email: string;
  name?: string;
}

/** One attachment of the v3 body. */
export interface SendgridAttachment {
  /** Base64. */
  content: string;
  filename: string;
  type?: string;
  disposition?: 'attachment' | 'inline';
  content_id?: string;
}

/** The body of `POST /v3/mail/send`, as far as Mailvia fills it. */
export interface MailSendBody {
  personalizations: {
    to: SendgridAddress[];
    cc?: SendgridAddress[];
    bcc?: SendgridAddress[];
    custom_args: Record<string, string>;
  }[];
  from: SendgridAddress;
  reply_to?: SendgridAddress;
  reply_to_list?: SendgridAddress[];
  subject?: string;
  content?: { type: string; value: string }[];
  attachments?: SendgridAttachment[];
  headers?: Record<string, string>;
  categories?: string[];
}

const toAddress = (a: Address): SendgridAddress => (a.name ? { email: a.address, name: a.name } : { email: a.address });

/** Drops addresses already seen (SendGrid refuses one address twice across to, cc and bcc). */
function unique(list: Address[], seen: Set<string>): SendgridAddress[] {
  const out: SendgridAddress[] = [];
  for (const a of list) {
    const key = a.address.toLowerCase();
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(toAddress(a));
  }
  return out;
}

/** The bytes of an attachment (a `path` or `href` only reaches a route when the application allowed it). */
export async function attachmentBytes(a: PreparedAttachment, signal?: AbortSignal): Promise<Buffer> {
  if (a.content !== undefined) {
    return typeof a.content === 'string' ? Buffer.from(a.content, a.encoding ?? 'utf8') : Buffer.from(a.content);
  }
  if (a.path !== undefined) return readFile(a.path, signal ? { signal } : {});
  if (a.href !== undefined) {
    const res = await fetch(a.href, signal ? { signal } : {});
    if (!res.ok) throw new Error(`attachment ${a.href}: HTTP ${res.status}`);
    return Buffer.from(await res.arrayBuffer());
  }
  return Buffer.alloc(0);
}

/**
 * Turns a prepared message into the v3 Mail Send body: one personalization (to, cc, bcc and the
 * custom args: metadata plus the Message-ID and idempotency key), text before HTML, base64
 * attachments, headers, and the tags as categories.
 */
export async function toMailSendBody(message: PreparedMessage, signal?: AbortSignal): Promise<MailSendBody> {
  const seen = new Set<string>();
  const to = unique(message.to, seen);
  const cc = unique(message.cc, seen);
  const bcc = unique(message.bcc, seen);
  const custom_args: Record<string, string> = {
    ...message.metadata,
    [MESSAGE_ID_ARG]: message.messageId,
    ...(message.idempotencyKey !== undefined ? { [IDEMPOTENCY_KEY_ARG]: message.idempotencyKey } : {}),
  };
  const content: { type: string; value: string }[] = [];
  if (message.text) content.push({ type: 'text/plain', value: message.text });
  if (message.html) content.push({ type: 'text/html', value: message.html });
  const attachments = await Promise.all(
    message.attachments.map(async (a, i): Promise<SendgridAttachment> => {
      const inline = a.cid !== undefined || a.contentDisposition === 'inline';
      return {
        content: (await attachmentBytes(a, signal)).toString('base64'),
        filename: a.filename ?? a.cid ?? `attachment-${i + 1}`,
        ...(a.contentType ? { type: a.contentType } : {}),
        disposition: inline ? 'inline' : 'attachment',
        ...(a.cid !== undefined ? { content_id: a.cid } : {}),
      };
    }),
  );
  const categories = [...new Set(message.tags)];
  const replyTo = message.replyTo.map(toAddress);
  return {
    personalizations: [{ to, ...(cc.length ? { cc } : {}), ...(bcc.length ? { bcc } : {}), custom_args }],
    from: toAddress(message.from),
    ...(replyTo.length === 1 ? { reply_to: replyTo[0] } : {}),
    ...(replyTo.length > 1 ? { reply_to_list: replyTo } : {}),
    ...(message.subject ? { subject: message.subject } : {}),
    ...(content.length ? { content } : {}),
    ...(attachments.length ? { attachments } : {}),
    ...(Object.keys(message.headers).length ? { headers: { ...message.headers } } : {}),
    ...(categories.length ? { categories } : {}),
  };
}
