import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MailError } from './errors.js';
import { formatAddress, type PreparedMessage } from './message.js';
import { composeMime } from './mime.js';
import type { Receipt, SendOptions, Transport } from './spec.js';

/** What the outbox keeps about a captured mail (the raw `.eml` is read with {@link Outbox.get}). */
export interface CapturedMail {
  /** The outbox's id for this mail. */
  id: string;
  organisation?: string;
  messageId: string;
  /** ISO 8601. */
  capturedAt: string;
  from: string;
  to: string[];
  cc: string[];
  bcc: string[];
  subject: string;
  envelope: { from: string; to: string[] };
  tags: string[];
  metadata: Record<string, string>;
  /** Size of the raw message, in bytes. */
  size: number;
  /** The route that would have sent it, when known (development mode). */
  route?: string;
}

/** A captured mail with its content. */
export interface CapturedMailContent extends CapturedMail {
  /** The RFC 5322 source, exactly as a route would have sent it. */
  raw: Buffer;
  text?: string;
  html?: string;
}

/** Options of {@link createOutbox}. */
export interface OutboxOptions {
  /** How many mails to keep; the oldest go first. @default 1000 */
  limit?: number;
  /** Also write each mail to this folder as `<id>.eml` + `<id>.json` (and read them back at start). */
  dir?: string;
}

/** Filter for listing and clearing. */
export interface OutboxFilter {
  organisation?: string;
}

/**
 * The development outbox: captured mails, per organisation, newest first. Emits `captured`
 * with a {@link CapturedMail} for each new one.
 */
export class Outbox extends EventEmitter<{ captured: [CapturedMail] }> {
  private readonly mails = new Map<string, CapturedMailContent>();
  private readonly limit: number;
  private readonly dir: string | undefined;
  private loaded: Promise<void> | undefined;

  constructor(options: OutboxOptions = {}) {
    super();
    this.limit = options.limit ?? 1000;
    this.dir = options.dir;
  }

  private load(): Promise<void> {
    this.loaded ??= (async () => {
      if (!this.dir) return;
      await mkdir(this.dir, { recursive: true });
      const files = (await readdir(this.dir)).filter((f) => f.endsWith('.json'));
      const found: CapturedMailContent[] = [];
      for (const f of files) {
        try {
          const meta = JSON.parse(await readFile(join(this.dir, f), 'utf8')) as CapturedMail & {
            text?: string;
            html?: string;
          };
          const raw = await readFile(join(this.dir, `${meta.id}.eml`));
          found.push({ ...meta, raw });
        } catch {
          // a half-written pair is skipped
        }
      }
      found.sort((a, b) => a.capturedAt.localeCompare(b.capturedAt));
      for (const m of found.slice(-this.limit)) this.mails.set(m.id, m);
    })();
    return this.loaded;
  }

  /** Stores a message. */
  async add(message: PreparedMessage, options: { organisation?: string; route?: string } = {}): Promise<CapturedMail> {
    await this.load();
    const raw = await composeMime(message);
    const mail: CapturedMail = {
      id: `${Date.now().toString(36)}-${randomUUID().slice(0, 8)}`,
      ...(options.organisation !== undefined ? { organisation: options.organisation } : {}),
      messageId: message.messageId,
      capturedAt: new Date().toISOString(),
      from: formatAddress(message.from),
      to: message.to.map(formatAddress),
      cc: message.cc.map(formatAddress),
      bcc: message.bcc.map(formatAddress),
      subject: message.subject,
      envelope: message.envelope,
      tags: message.tags,
      metadata: message.metadata,
      size: raw.length,
      ...(options.route !== undefined ? { route: options.route } : {}),
    };
    const content: CapturedMailContent = {
      ...mail,
      raw,
      ...(message.text !== undefined ? { text: message.text } : {}),
      ...(message.html !== undefined ? { html: message.html } : {}),
    };
    this.mails.set(mail.id, content);
    while (this.mails.size > this.limit) {
      const oldest = this.mails.keys().next().value as string;
      this.mails.delete(oldest);
      if (this.dir) await this.removeFiles(oldest);
    }
    if (this.dir) {
      const { raw: _raw, ...meta } = content;
      await writeFile(join(this.dir, `${mail.id}.eml`), raw);
      await writeFile(join(this.dir, `${mail.id}.json`), JSON.stringify(meta, null, 2));
    }
    this.emit('captured', mail);
    return mail;
  }

  /** Captured mails, newest first. */
  async list(filter: OutboxFilter = {}): Promise<CapturedMail[]> {
    await this.load();
    const out: CapturedMail[] = [];
    for (const m of this.mails.values()) {
      if (filter.organisation !== undefined && m.organisation !== filter.organisation) continue;
      const { raw: _raw, text: _t, html: _h, ...meta } = m;
      out.push(meta);
    }
    return out.reverse();
  }

  /** One captured mail with its raw source, or undefined. */
  async get(id: string): Promise<CapturedMailContent | undefined> {
    await this.load();
    return this.mails.get(id);
  }

  /** Removes captured mails (of one organisation, or all); returns how many. */
  async clear(filter: OutboxFilter = {}): Promise<number> {
    await this.load();
    let n = 0;
    for (const [id, m] of [...this.mails]) {
      if (filter.organisation !== undefined && m.organisation !== filter.organisation) continue;
      this.mails.delete(id);
      if (this.dir) await this.removeFiles(id);
      n++;
    }
    return n;
  }

  private async removeFiles(id: string): Promise<void> {
    const dir = this.dir!;
    await Promise.all([rm(join(dir, `${id}.eml`), { force: true }), rm(join(dir, `${id}.json`), { force: true })]);
  }
}

/** Creates an {@link Outbox}. */
export function createOutbox(options: OutboxOptions = {}): Outbox {
  return new Outbox(options);
}

/** Options of {@link capture}. */
export interface CaptureRouteOptions {
  outbox: Outbox;
  /** @default 'capture' */
  name?: string;
}

/**
 * The development route: keeps the message in an {@link Outbox} and sends nothing. As the last
 * route of a chain it is a last resort that never loses a mail.
 */
export function capture(options: CaptureRouteOptions): Transport {
  const name = options.name ?? 'capture';
  return {
    specificationVersion: 'v1',
    name,
    async send(message: PreparedMessage, sendOptions: SendOptions = {}): Promise<Receipt> {
      const startedAt = Date.now();
      if (sendOptions.signal?.aborted) {
        throw new MailError(`${name}: the send was aborted`, {
          kind: 'unavailable',
          phase: 'connect',
          route: name,
          code: 'EABORT',
        });
      }
      const mail = await options.outbox.add(message, {
        ...(sendOptions.organisation !== undefined ? { organisation: sendOptions.organisation } : {}),
      });
      return {
        route: name,
        messageId: message.messageId,
        providerMessageId: mail.id,
        accepted: [...message.envelope.to],
        rejected: [],
        response: `captured as ${mail.id}`,
        acceptedBy: 'outbox',
        attempts: [{ route: name, ok: true, startedAt, durationMs: Date.now() - startedAt }],
      };
    },
    async verify() {},
    async close() {},
  };
}
