import type { Duplex } from 'node:stream';
import type { ConnectionOptions } from 'node:tls';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import { type ErrorRule, failure, parseSmtpReply, redact } from './classify.js';
import { type FailurePhase, MailError, RouteConfigError } from './errors.js';
import type { PreparedMessage } from './message.js';
import { composeMime } from './mime.js';
import type { Receipt, SendOptions, Transport } from './spec.js';
import { abortReason, isLoopbackHost } from './util.js';

/** Options of {@link smtp}. Timeouts are in milliseconds. */
export interface SmtpRouteOptions {
  host: string;
  /** @default 465 when `secure`, else 587 */
  port?: number;
  /** Implicit TLS from the first byte (port 465). Otherwise STARTTLS is used when offered. @default port === 465 */
  secure?: boolean;
  auth?: { user: string; pass: string };
  /**
   * Refuse to go on without TLS. Always on for a host other than loopback (no TLS downgrade, no
   * clear-text AUTH); may be turned off only for an unauthenticated route.
   * @default true unless the host is loopback
   */
  requireTLS?: boolean;
  /** TLS options (`ca`, `servername`, `rejectUnauthorized`…). TLS 1.2 is the minimum. */
  tls?: ConnectionOptions;
  /** Keep connections open and reuse them. @default true */
  pool?: boolean;
  /** Connections per pool. @default 3 */
  maxConnections?: number;
  /** Messages per pooled connection before it is replaced. @default Infinity (no pause) */
  maxMessages?: number;
  /** Close a pooled connection idle for this long. @default 30_000 */
  idleTimeout?: number;
  /** TCP connect timeout. @default 2000 */
  connectionTimeout?: number;
  /** Wait for the server's greeting. @default 2000 */
  greetingTimeout?: number;
  /** Inactivity timeout once connected (e.g. waiting for the answer to the message). @default 30_000 */
  socketTimeout?: number;
  /** DNS lookup timeout. @default 2000 */
  dnsTimeout?: number;
  /** The name to greet with in EHLO. @default the machine's host name */
  clientName?: string;
  /** A route name for logs and receipts. @default `smtp://user@host:port` */
  name?: string;
  /**
   * Opens the connection instead of a direct TCP connect (e.g. through a SOCKS proxy). The
   * returned socket must already be connected to `host:port`; TLS is layered on it as usual.
   */
  connect?: (target: { host: string; port: number }, options: { signal?: AbortSignal }) => Promise<Duplex>;
  /** What a successful send means. A relay queues before it delivers. @default 'provider' */
  acceptedBy?: 'provider' | 'relay';
  /** Extra classification rows, tried before core's (a provider's SMTP texts). */
  rules?: readonly ErrorRule[];
}

type NodemailerError = Error & {
  code?: string;
  originalCode?: string;
  command?: string;
  response?: string;
  responseCode?: number;
  rejected?: string[];
  rejectedErrors?: NodemailerError[];
};

type SentInfo = {
  accepted?: string[];
  rejected?: string[];
  response?: string;
  serverMessageId?: string;
};

/** One connection of the pool, and what the current send on it has reached. */
interface Conn {
  smtp: SMTPConnection;
  /** The whole body and the final dot were written for the current send. */
  dataSent: boolean;
  messages: number;
  dead: boolean;
  retired: boolean;
  generation: number;
  idleTimer?: NodeJS.Timeout;
}

interface Waiter {
  resolve(c: Conn): void;
  reject(e: unknown): void;
  signal: AbortSignal | undefined;
}

const noop = () => {};

/**
 * A route that sends over SMTP with nodemailer's SMTP client: pooled connections, STARTTLS or
 * implicit TLS, AUTH, and timeouts that find a dead or black-holed server in about two seconds.
 * Connections open lazily, on the first send, and close when idle.
 *
 * Each connection reports when the whole body and the final dot were written, so a connection
 * lost after that is told apart (outcome `unknown`) from one lost before (route `unavailable`).
 *
 * @example
 * ```ts
 * const gmail = smtp({ host: 'smtp.gmail.com', port: 587, auth: { user: 'school@example.org', pass: process.env.APP_PASSWORD! } });
 * ```
 */
export function smtp(options: SmtpRouteOptions): Transport {
  return new SmtpTransport(options);
}

class SmtpTransport implements Transport {
  readonly specificationVersion = 'v1' as const;
  readonly name: string;
  private readonly config: Record<string, unknown>;
  private readonly secrets: string[];
  private readonly pool: boolean;
  private readonly maxConnections: number;
  private readonly maxMessages: number;
  private readonly idleTimeout: number;
  private idle: Conn[] = [];
  private waiters: Waiter[] = [];
  private open = 0;
  private generation = 0;

  constructor(private readonly options: SmtpRouteOptions) {
    const { host } = options;
    if (!host || typeof host !== 'string') throw new RouteConfigError('host', 'is required');
    const secure = options.secure ?? options.port === 465;
    const port = options.port ?? (secure ? 465 : 587);
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new RouteConfigError('port', `${String(options.port)} is not a TCP port`);
    }
    const loopback = isLoopbackHost(host);
    const requireTLS = options.requireTLS ?? !loopback;
    if (!requireTLS && !secure && options.auth && !loopback) {
      throw new RouteConfigError(
        'requireTLS',
        `AUTH would be sent in clear text to ${host}; only loopback may do that`,
      );
    }
    this.name =
      options.name ?? `smtp${secure ? 's' : ''}://${options.auth ? `${options.auth.user}@` : ''}${host}:${port}`;
    this.secrets = options.auth ? [options.auth.pass] : [];
    this.pool = options.pool ?? true;
    this.maxConnections = Math.max(1, options.maxConnections ?? 3);
    this.maxMessages = options.maxMessages ?? Number.POSITIVE_INFINITY;
    this.idleTimeout = options.idleTimeout ?? 30_000;
    this.config = {
      host,
      port,
      secure,
      requireTLS: secure ? false : requireTLS,
      tls: { minVersion: 'TLSv1.2', ...(options.tls ?? {}) },
      connectionTimeout: options.connectionTimeout ?? 2000,
      greetingTimeout: options.greetingTimeout ?? 2000,
      socketTimeout: options.socketTimeout ?? 30_000,
      dnsTimeout: options.dnsTimeout ?? 2000,
      ...(options.clientName ? { name: options.clientName } : {}),
      debug: false,
    };
  }

  private fail(err: unknown, phase: FailurePhase): MailError {
    if (MailError.isInstance(err)) return err;
    const e = (err ?? new Error('unknown error')) as NodemailerError;
    const replyText = e.rejectedErrors?.[0]?.response ?? e.response;
    const reply = replyText ? parseSmtpReply(replyText) : undefined;
    const sysCode = e.originalCode ?? e.code;
    return failure({
      route: this.name,
      phase,
      ...(reply?.code !== undefined ? { smtpCode: reply.code } : {}),
      ...(reply?.enhanced !== undefined ? { enhanced: reply.enhanced } : {}),
      ...(sysCode !== undefined ? { errorCode: sysCode } : {}),
      text: redact(reply?.text ?? e.message, this.secrets),
      message: redact(e.message, this.secrets),
      ...(e.rejected?.length ? { recipients: e.rejected } : {}),
      ...(this.options.rules ? { rules: this.options.rules } : {}),
    });
  }

  /** Opens, greets, upgrades to TLS and authenticates one connection. */
  private async connectOne(signal: AbortSignal | undefined): Promise<Conn> {
    let socket: Duplex | undefined;
    if (this.options.connect) {
      try {
        socket = await this.options.connect(
          { host: this.config.host as string, port: this.config.port as number },
          signal ? { signal } : {},
        );
      } catch (err) {
        if (signal?.aborted) throw aborted(this.name, signal, false);
        throw this.fail(err, 'connect');
      }
      // the hook may ignore the signal: an abort while it ran must still stop the send
      if (signal?.aborted) {
        socket.destroy();
        throw aborted(this.name, signal, false);
      }
    }
    const c = { dataSent: false, messages: 0, dead: false, retired: false, generation: this.generation } as Conn;
    const logger = {
      info: (entry: { tnx?: string } | undefined) => {
        if (entry?.tnx === 'message') c.dataSent = true;
      },
      trace: noop,
      debug: noop,
      warn: noop,
      error: noop,
      fatal: noop,
    };
    c.smtp = new SMTPConnection({
      ...this.config,
      logger,
      ...(socket ? { connection: socket } : {}),
    } as ConstructorParameters<typeof SMTPConnection>[0]);
    c.smtp.on('error', () => {
      c.dead = true;
    });
    c.smtp.once('end', () => {
      c.dead = true;
      const i = this.idle.indexOf(c);
      if (i >= 0) {
        this.idle.splice(i, 1);
        this.retire(c);
      }
    });
    const onAbort = () => c.smtp.close();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      // a failure while connecting is emitted as 'error' (or a bare 'end'), not always given to the callback
      await new Promise<void>((resolve, reject) => {
        const onError = (err: Error) => reject(err);
        const onEnd = () =>
          reject(Object.assign(new Error('Connection closed'), { code: 'ECONNECTION', command: 'CONN' }));
        c.smtp.once('error', onError);
        c.smtp.once('end', onEnd);
        const done = (err?: Error | null) => {
          c.smtp.off('error', onError);
          c.smtp.off('end', onEnd);
          if (err) reject(err);
          else resolve();
        };
        c.smtp.connect((err?: Error | null) => {
          if (err || !this.options.auth) return done(err);
          const { user, pass } = this.options.auth;
          c.smtp.login({ user, pass }, done);
        });
      });
    } catch (err) {
      c.dead = true;
      c.smtp.close();
      if (signal?.aborted) throw aborted(this.name, signal, false);
      const e = err as NodemailerError;
      throw this.fail(e, (e.command ?? '').startsWith('AUTH') || e.code === 'EAUTH' ? 'auth' : 'connect');
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    return c;
  }

  private retire(c: Conn): void {
    if (c.retired) return;
    c.retired = true;
    if (c.idleTimer) clearTimeout(c.idleTimer);
    this.open--;
    this.wake();
  }

  private discard(c: Conn): void {
    c.dead = true;
    c.smtp.close();
    this.retire(c);
  }

  /** Hands a new connection to the first waiter when there is room. */
  private wake(): void {
    while (this.waiters.length && this.open < this.maxConnections) {
      const w = this.waiters.shift()!;
      if (w.signal?.aborted) continue;
      this.open++;
      this.connectOne(w.signal).then(w.resolve, (e: unknown) => {
        this.open--;
        w.reject(e);
        this.wake();
      });
    }
  }

  private async acquire(signal: AbortSignal | undefined): Promise<Conn> {
    while (this.idle.length) {
      const c = this.idle.pop()!;
      if (c.idleTimer) clearTimeout(c.idleTimer);
      if (!c.dead) return c;
      this.retire(c);
    }
    if (!this.pool || this.open < this.maxConnections) {
      this.open++;
      try {
        return await this.connectOne(signal);
      } catch (e) {
        this.open--;
        this.wake();
        throw e;
      }
    }
    return new Promise<Conn>((resolve, reject) => {
      const w: Waiter = { resolve, reject, signal };
      this.waiters.push(w);
      signal?.addEventListener(
        'abort',
        () => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(aborted(this.name, signal, false));
        },
        { once: true },
      );
    });
  }

  private release(c: Conn): void {
    if (c.dead || c.generation !== this.generation || !this.pool || c.messages >= this.maxMessages) {
      if (!c.dead) c.smtp.quit();
      this.retire(c);
      return;
    }
    const w = this.waiters.shift();
    if (w) {
      w.resolve(c);
      return;
    }
    this.idle.push(c);
    c.idleTimer = setTimeout(() => {
      const i = this.idle.indexOf(c);
      if (i >= 0) this.idle.splice(i, 1);
      c.smtp.quit();
      this.retire(c);
    }, this.idleTimeout);
    c.idleTimer.unref();
  }

  async send(message: PreparedMessage, options: SendOptions = {}): Promise<Receipt> {
    const { signal } = options;
    const startedAt = Date.now();
    if (signal?.aborted) throw aborted(this.name, signal, false);
    const raw = await composeMime(message);
    let info: SentInfo | undefined;
    for (let attempt = 0; !info; attempt++) {
      const c = await this.acquire(signal);
      const reused = c.messages > 0;
      try {
        info = await this.sendOn(c, message, raw, signal);
      } catch (err) {
        const e = err as NodemailerError;
        // a pooled connection the server dropped while idle: not a byte went out, use a fresh one
        if (reused && attempt === 0 && !c.dataSent && !e.responseCode && !signal?.aborted && !MailError.isInstance(err))
          continue;
        if (MailError.isInstance(err)) throw err;
        throw this.fail(e, phaseOf(e, c.dataSent));
      }
    }
    return {
      route: this.name,
      messageId: message.messageId,
      ...(info.serverMessageId ? { providerMessageId: info.serverMessageId } : {}),
      accepted: info.accepted ?? [],
      rejected: info.rejected ?? [],
      ...(info.response ? { response: info.response } : {}),
      acceptedBy: this.options.acceptedBy ?? 'provider',
      attempts: [{ route: this.name, ok: true, startedAt, durationMs: Date.now() - startedAt }],
    };
  }

  private sendOn(c: Conn, message: PreparedMessage, raw: Buffer, signal: AbortSignal | undefined): Promise<SentInfo> {
    c.dataSent = false;
    return new Promise<SentInfo>((resolve, reject) => {
      let settled = false;
      const onAbort = () => {
        if (settled) return;
        settled = true;
        const sent = c.dataSent;
        this.discard(c);
        reject(aborted(this.name, signal!, sent));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      // nodemailer writes its state (mailError, rejected…) onto the envelope: give it a copy per send
      const envelope = { from: message.envelope.from, to: [...message.envelope.to] };
      c.smtp.send(envelope, raw, (err: Error | null, result: SentInfo) => {
        signal?.removeEventListener('abort', onAbort);
        if (settled) return;
        settled = true;
        c.messages++;
        if (!err) {
          this.release(c);
          return resolve(result);
        }
        const e = err as NodemailerError;
        if ((e.code === 'EENVELOPE' || e.code === 'EMESSAGE') && e.responseCode !== 421 && !c.dead) {
          // the server refused this message; the connection itself is fine
          c.smtp.reset((resetErr?: Error | null) => (resetErr ? this.discard(c) : this.release(c)));
        } else this.discard(c);
        reject(e);
      });
    });
  }

  async verify(options: { signal?: AbortSignal } = {}): Promise<void> {
    if (options.signal?.aborted) throw aborted(this.name, options.signal, false);
    this.open++;
    const c = await this.connectOne(options.signal).catch((e: unknown) => {
      this.open--;
      throw e;
    });
    c.smtp.quit();
    this.retire(c);
  }

  async close(): Promise<void> {
    this.generation++;
    const idle = this.idle;
    this.idle = [];
    for (const c of idle) {
      c.smtp.quit();
      this.retire(c);
    }
  }
}

function phaseOf(e: NodemailerError, dataSent: boolean): FailurePhase {
  if (dataSent) return e.responseCode ? 'response' : 'data-sent';
  const cmd = e.command ?? '';
  if (cmd.startsWith('AUTH') || e.code === 'EAUTH' || e.code === 'ENOAUTH') return 'auth';
  if (cmd.startsWith('MAIL') || cmd.startsWith('RCPT') || cmd === 'DATA' || e.code === 'EENVELOPE') return 'envelope';
  if (e.code === 'ESTREAM' || e.code === 'EMESSAGE') return 'data';
  return 'connect';
}

function aborted(route: string, signal: AbortSignal, sent: boolean): MailError {
  return new MailError(
    `${route}: ${abortReason(signal)}${sent ? ' after the message was sent: outcome unknown' : ''}`,
    {
      kind: sent ? 'unknown' : 'unavailable',
      phase: sent ? 'data-sent' : 'connect',
      route,
      code: 'EABORT',
    },
  );
}
