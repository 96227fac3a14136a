import { randomUUID } from 'node:crypto';
import { domainToASCII } from 'node:url';
import addressparser from 'nodemailer/lib/addressparser';
import { z } from 'zod';
import { MessageValidationError } from './errors.js';

/** An address as the application writes it: `'a@example.org'`, `'Ada <a@example.org>'` or an object. */
export type AddressInput = string | { name?: string; address: string };

/** An attachment. `content` is sent as is; `path` and `href` are refused unless the mailer allows them. */
export interface Attachment {
  filename?: string;
  /** The bytes, or a string in `encoding`. */
  content?: string | Uint8Array;
  /** How a string `content` is encoded. @default 'utf8' */
  encoding?: 'utf8' | 'base64' | 'hex';
  contentType?: string;
  /** Content-ID for inline images referenced as `cid:` from the HTML. */
  cid?: string;
  contentDisposition?: 'attachment' | 'inline';
  /** A local file to read. Refused unless `allowFileAttachments` is set: never on user input. */
  path?: string;
  /** A URL to fetch. Refused unless `allowUrlAttachments` is set: never on user input. */
  href?: string;
}

/** The message the application sends: one plain, serialisable object. */
export interface Message {
  from: AddressInput;
  to?: AddressInput | AddressInput[];
  cc?: AddressInput | AddressInput[];
  bcc?: AddressInput | AddressInput[];
  replyTo?: AddressInput | AddressInput[];
  subject?: string;
  text?: string;
  html?: string;
  attachments?: Attachment[];
  /** Extra headers. Structural ones (From, To, Subject, Content-Type…) come from their fields instead. */
  headers?: Record<string, string>;
  /** Labels a provider can report on (SendGrid categories, Mailgun and SES tags). */
  tags?: string[];
  /** Key/value pairs carried with the message (provider custom args / variables) and in the log. */
  metadata?: Record<string, string>;
  /** The same key sends once, however often the message is sent or enqueued. */
  idempotencyKey?: string;
  /** The RFC 5322 Message-ID, `<id@domain>`. Generated when absent; kept on every attempt. */
  messageId?: string;
  /** The Date header, as an ISO 8601 string or Date. @default now */
  date?: string | Date;
}

/** A parsed address: `address` is ASCII (IDN domains in punycode). */
export interface Address {
  name?: string;
  address: string;
}

/** An attachment after validation (no `path`/`href` unless allowed). */
export type PreparedAttachment = Attachment;

declare const preparedBrand: unique symbol;

/**
 * A message that passed validation: addresses parsed, domains in punycode, Message-ID and Date
 * fixed, envelope computed. Routes only ever receive this. Plain data: it survives
 * `JSON.stringify` (attachment bytes as `Uint8Array` aside) and `prepareMessage` again.
 */
export interface PreparedMessage {
  readonly [preparedBrand]: true;
  from: Address;
  to: Address[];
  cc: Address[];
  bcc: Address[];
  replyTo: Address[];
  subject: string;
  text?: string;
  html?: string;
  attachments: PreparedAttachment[];
  headers: Record<string, string>;
  tags: string[];
  metadata: Record<string, string>;
  idempotencyKey?: string;
  messageId: string;
  /** ISO 8601. */
  date: string;
  /** SMTP envelope: MAIL FROM and every RCPT TO (to + cc + bcc, de-duplicated). */
  envelope: { from: string; to: string[] };
}

/** Limits and permissions of validation. */
export interface ValidationOptions {
  /** Largest attachment, in bytes. @default 25 MiB */
  maxAttachmentSize?: number;
  /** Allow `path` attachments (local file reads). @default false */
  allowFileAttachments?: boolean;
  /** Allow `href` attachments (URL fetches). @default false */
  allowUrlAttachments?: boolean;
}

const MiB = 1024 * 1024;
const CONTROL = /[\r\n\0]/;
const HEADER_NAME = /^[!-9;-~]+$/;
const RESERVED_HEADERS = new Set([
  'from',
  'to',
  'cc',
  'bcc',
  'reply-to',
  'subject',
  'message-id',
  'date',
  'content-type',
  'content-transfer-encoding',
  'mime-version',
]);
const ATOM = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\uFFFF-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\uFFFF-]+)*$/;
const QUOTED = /^"([\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"$/;
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/i;
const IP_LITERAL = /^\[(\d{1,3}\.){3}\d{1,3}\]$/;

const addressInput = z.union([z.string(), z.object({ name: z.string().optional(), address: z.string() }).strict()]);
const addressList = z.union([addressInput, z.array(addressInput)]).optional();
const attachmentShape = z
  .object({
    filename: z.string().optional(),
    content: z.union([z.string(), z.instanceof(Uint8Array)]).optional(),
    encoding: z.enum(['utf8', 'base64', 'hex']).optional(),
    contentType: z.string().optional(),
    cid: z.string().optional(),
    contentDisposition: z.enum(['attachment', 'inline']).optional(),
    path: z.string().optional(),
    href: z.string().optional(),
  })
  .strict();
const messageShape = z
  .object({
    from: addressInput,
    to: addressList,
    cc: addressList,
    bcc: addressList,
    replyTo: addressList,
    subject: z.string().optional(),
    text: z.string().optional(),
    html: z.string().optional(),
    attachments: z.array(attachmentShape).optional(),
    headers: z.record(z.string(), z.string()).optional(),
    tags: z.array(z.string()).optional(),
    metadata: z.record(z.string(), z.string()).optional(),
    idempotencyKey: z.string().min(1).max(256).optional(),
    messageId: z.string().optional(),
    date: z.union([z.string(), z.date()]).optional(),
    // fields of a prepared message, accepted back so a stored message can be prepared again
    envelope: z.unknown().optional(),
  })
  .strict();

function pathOf(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out || 'message';
}

function noControl(field: string, value: string | undefined): void {
  if (value !== undefined && CONTROL.test(value)) {
    throw new MessageValidationError(field, 'contains a line break or NUL (header injection)');
  }
}

/** Checks and normalises one address; the domain comes back in punycode. */
export function parseAddress(field: string, input: AddressInput): Address[] {
  let items: Address[];
  if (typeof input === 'string') {
    noControl(field, input);
    const parsed = addressparser(input, { flatten: true }) as { name?: string; address?: string }[];
    items = parsed.map((p) => ({ name: p.name || undefined, address: p.address ?? '' }));
    if (items.length === 0) throw new MessageValidationError(field, `no address in ${JSON.stringify(input)}`);
  } else {
    noControl(`${field}.name`, input.name);
    noControl(`${field}.address`, input.address);
    items = [{ name: input.name || undefined, address: input.address }];
  }
  return items.map((item) => {
    const address = checkMailbox(field, item.address.trim());
    return item.name ? { name: item.name, address } : { address };
  });
}

function checkMailbox(field: string, raw: string): string {
  const at = raw.lastIndexOf('@');
  if (at <= 0 || at === raw.length - 1) {
    throw new MessageValidationError(field, `${JSON.stringify(raw)} is not an e-mail address (local@domain)`);
  }
  const local = raw.slice(0, at);
  const domain = raw.slice(at + 1);
  if (local.length > 64 || !(ATOM.test(local) || QUOTED.test(local))) {
    throw new MessageValidationError(field, `${JSON.stringify(raw)} has a malformed local part`);
  }
  let ascii: string;
  if (IP_LITERAL.test(domain)) {
    ascii = domain;
  } else {
    ascii = domainToASCII(domain.toLowerCase());
    const labels = ascii.split('.');
    if (!ascii || labels.length < 2 || !labels.every((l) => LABEL.test(l)) || /^\d+$/.test(labels.at(-1) ?? '')) {
      throw new MessageValidationError(field, `${JSON.stringify(raw)} has a malformed domain`);
    }
  }
  const address = `${local}@${ascii}`;
  if (address.length > 254) throw new MessageValidationError(field, 'address longer than 254 characters');
  return address;
}

function parseList(field: string, input: AddressInput | AddressInput[] | undefined): Address[] {
  if (input === undefined) return [];
  const list = Array.isArray(input) ? input : [input];
  return list.flatMap((item, i) => parseAddress(Array.isArray(input) ? `${field}[${i}]` : field, item));
}

function attachmentSize(a: Attachment): number {
  if (a.content === undefined) return 0;
  if (typeof a.content !== 'string') return a.content.byteLength;
  if (a.encoding === 'base64') return Math.floor((a.content.replace(/[^A-Za-z0-9+/]/g, '').length * 3) / 4);
  if (a.encoding === 'hex') return Math.floor(a.content.length / 2);
  return Buffer.byteLength(a.content);
}

/**
 * Validates a message at the door and returns the {@link PreparedMessage} routes receive.
 * Throws a {@link MessageValidationError} naming the first bad field.
 */
export function prepareMessage(input: Message | PreparedMessage, options: ValidationOptions = {}): PreparedMessage {
  const shape = messageShape.safeParse(input);
  if (!shape.success) {
    const issue = shape.error.issues[0]!;
    throw new MessageValidationError(pathOf(issue.path), issue.message);
  }
  const m = shape.data as Message;
  const fromList = parseAddress('from', m.from);
  if (fromList.length !== 1) throw new MessageValidationError('from', 'must be exactly one address');
  const from = fromList[0]!;
  const to = parseList('to', m.to);
  const cc = parseList('cc', m.cc);
  const bcc = parseList('bcc', m.bcc);
  const replyTo = parseList('replyTo', m.replyTo);
  if (to.length + cc.length + bcc.length === 0) {
    throw new MessageValidationError('to', 'no recipient: give at least one of to, cc or bcc');
  }
  const subject = m.subject ?? '';
  noControl('subject', subject);

  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(m.headers ?? {})) {
    if (!HEADER_NAME.test(name)) throw new MessageValidationError(`headers.${name}`, 'is not a valid header name');
    if (RESERVED_HEADERS.has(name.toLowerCase())) {
      throw new MessageValidationError(`headers.${name}`, 'is set from the message fields; use those instead');
    }
    noControl(`headers.${name}`, value);
    headers[name] = value;
  }
  const tags = m.tags ?? [];
  tags.forEach((t, i) => {
    noControl(`tags[${i}]`, t);
    if (!t) throw new MessageValidationError(`tags[${i}]`, 'is empty');
  });
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(m.metadata ?? {})) {
    noControl(`metadata.${k}`, k);
    noControl(`metadata.${k}`, v);
    metadata[k] = v;
  }

  const maxSize = options.maxAttachmentSize ?? 25 * MiB;
  const attachments = (m.attachments ?? []).map((a, i) => {
    const field = `attachments[${i}]`;
    noControl(`${field}.filename`, a.filename);
    noControl(`${field}.contentType`, a.contentType);
    noControl(`${field}.cid`, a.cid);
    if (a.path !== undefined && !options.allowFileAttachments) {
      throw new MessageValidationError(`${field}.path`, 'file attachments are disabled (allowFileAttachments)');
    }
    if (a.href !== undefined && !options.allowUrlAttachments) {
      throw new MessageValidationError(`${field}.href`, 'URL attachments are disabled (allowUrlAttachments)');
    }
    if (a.content === undefined && a.path === undefined && a.href === undefined) {
      throw new MessageValidationError(`${field}.content`, 'an attachment needs content');
    }
    const size = attachmentSize(a);
    if (size > maxSize) {
      throw new MessageValidationError(`${field}.content`, `is ${size} bytes, over the limit of ${maxSize}`);
    }
    return a;
  });

  let messageId = m.messageId;
  if (messageId !== undefined) {
    noControl('messageId', messageId);
    if (!/^<[^<>\s@]+@[^<>\s@]+>$/.test(messageId)) {
      throw new MessageValidationError('messageId', 'must look like <id@domain>');
    }
  } else {
    messageId = `<${randomUUID()}@${from.address.slice(from.address.lastIndexOf('@') + 1)}>`;
  }
  let date: string;
  if (m.date === undefined) date = new Date().toISOString();
  else {
    const d = m.date instanceof Date ? m.date : new Date(m.date);
    if (Number.isNaN(d.getTime())) throw new MessageValidationError('date', 'is not a valid date');
    date = d.toISOString();
  }

  const rcpt = [...new Set([...to, ...cc, ...bcc].map((a) => a.address))];
  const prepared = {
    from,
    to,
    cc,
    bcc,
    replyTo,
    subject,
    attachments,
    headers,
    tags,
    metadata,
    messageId,
    date,
    envelope: { from: from.address, to: rcpt },
    ...(m.text !== undefined ? { text: m.text } : {}),
    ...(m.html !== undefined ? { html: m.html } : {}),
    ...(m.idempotencyKey !== undefined ? { idempotencyKey: m.idempotencyKey } : {}),
  };
  return prepared as unknown as PreparedMessage;
}

/** `"Ada" <ada@example.org>` or `ada@example.org`, for logs and headers. */
export function formatAddress(a: Address): string {
  return a.name ? `${JSON.stringify(a.name)} <${a.address}>` : a.address;
}
