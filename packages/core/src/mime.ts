import MailComposer from 'nodemailer/lib/mail-composer';
import type { PreparedMessage } from './message.js';

const cache = new WeakMap<PreparedMessage, Promise<Buffer>>();

/**
 * The message as RFC 5322 bytes, built once per prepared message: every SMTP-based route tried
 * for it sends the same bytes (same Message-ID, same boundaries, same attachments). Bcc is left
 * out of the headers; it stays in the envelope.
 */
export function composeMime(message: PreparedMessage): Promise<Buffer> {
  let built = cache.get(message);
  if (!built) {
    built = build(message);
    cache.set(message, built);
    // a failed build is not cached: the next caller gets the error again, freshly
    built.catch(() => cache.delete(message));
  }
  return built;
}

function build(m: PreparedMessage): Promise<Buffer> {
  const composer = new MailComposer({
    from: m.from,
    to: m.to,
    cc: m.cc,
    replyTo: m.replyTo,
    subject: m.subject,
    ...(m.text !== undefined ? { text: m.text } : {}),
    ...(m.html !== undefined ? { html: m.html } : {}),
    attachments: m.attachments.map((a) => ({
      ...a,
      // a view on the caller's bytes, not a copy (a 1 MB attachment is not duplicated per send)
      content:
        typeof a.content === 'string' || a.content === undefined
          ? a.content
          : Buffer.from(a.content.buffer, a.content.byteOffset, a.content.byteLength),
    })),
    headers: m.headers,
    messageId: m.messageId,
    date: new Date(m.date),
    // validation already refused path/href unless the application allowed them
    disableFileAccess: false,
    disableUrlAccess: false,
  });
  return composer.compile().build();
}
