import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ParsedMail, simpleParser } from 'mailparser';
import { SMTPServer, type SMTPServerSession } from 'smtp-server';

/** A self-signed certificate for `localhost` / 127.0.0.1, made with openssl once per process. */
export interface TestCertificate {
  key: string;
  cert: string;
}

let certificate: TestCertificate | undefined;

/** A certificate for loopback TLS in tests; clients trust it with `tls: { ca: cert }`. */
export function testCertificate(): TestCertificate {
  if (certificate) return certificate;
  const dir = mkdtempSync(join(tmpdir(), 'mailvia-cert-'));
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '2',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
    ],
    { stdio: 'ignore' },
  );
  if (!existsSync(cert)) throw new Error('openssl did not write a certificate');
  certificate = { key: readFileSync(key, 'utf8'), cert: readFileSync(cert, 'utf8') };
  return certificate;
}

/** A mail as the sink received it. */
export interface ReceivedMail {
  /** MAIL FROM. */
  from: string;
  /** Every RCPT TO. */
  to: string[];
  /** The AUTH user, when the client authenticated. */
  user?: string;
  /** The password the client authenticated with (so tests can check which credential was used). */
  pass?: string;
  /** True when the session ran over TLS (STARTTLS or implicit). */
  secure: boolean;
  raw: Buffer;
  parsed: ParsedMail;
  /** The sink's session id. */
  session: string;
}

/** A reply the sink gives at a stage instead of accepting: `{ code: 550, message: '5.1.1 No such user' }`. */
export interface SinkReply {
  code: number;
  message: string;
}

/** Where a behaviour can act. */
export type SinkStage = 'connect' | 'auth' | 'mail' | 'rcpt' | 'data';

/** What to do at a stage: nothing (accept), a failure reply, or cut the connection (`'cut'`). */
export type SinkAction = SinkReply | 'cut' | undefined;

/** Options of {@link startSmtpSink}. */
export interface SmtpSinkOptions {
  /** Accepted AUTH users and passwords. When set, AUTH is required to send. */
  users?: Record<string, string>;
  /** Offer STARTTLS. @default true */
  starttls?: boolean;
  /** Implicit TLS from the first byte. @default false */
  secure?: boolean;
  /** Port to listen on. @default a free one */
  port?: number;
  /**
   * Injects failures. Called at each stage with the address (mail, rcpt) or the received mail
   * (data, after the final dot). `'cut'` at `data` cuts the connection after the whole message
   * arrived, before the reply: the client cannot know the mail was taken.
   */
  behaviour?: (stage: SinkStage, detail: { address?: string; user?: string; mail?: ReceivedMail }) => SinkAction;
  /** Keep a mail even when `data` answers with `'cut'` (the server took it). @default true */
  keepCut?: boolean;
}

/** A running loopback SMTP server that records what it receives. */
export interface SmtpSink {
  host: string;
  port: number;
  /** The CA to trust for its TLS. */
  ca: string;
  received: ReceivedMail[];
  /** Connections accepted so far (to prove a route was skipped without a network call). */
  connections: number;
  /** Resolves when `n` mails were received (rejects after `timeoutMs`). */
  waitFor(n: number, timeoutMs?: number): Promise<ReceivedMail[]>;
  close(): Promise<void>;
}

function reply(r: SinkReply): Error {
  return Object.assign(new Error(r.message), { responseCode: r.code });
}

/** Starts smtp-server + mailparser on 127.0.0.1, with STARTTLS and AUTH as asked. */
export async function startSmtpSink(options: SmtpSinkOptions = {}): Promise<SmtpSink> {
  const { key, cert } = testCertificate();
  const received: ReceivedMail[] = [];
  const waiters: (() => void)[] = [];
  const behaviour = options.behaviour ?? (() => undefined);
  const passwords = new Map<string, string>();
  const state = { connections: 0 };
  const server: SMTPServer = new SMTPServer({
    secure: options.secure ?? false,
    key,
    cert,
    hideSTARTTLS: options.starttls === false,
    disableReverseLookup: true,
    authOptional: !options.users,
    allowInsecureAuth: true,
    authMethods: ['PLAIN', 'LOGIN'],
    size: 50 * 1024 * 1024,
    logger: false,
    onConnect(_session, cb) {
      state.connections++;
      const act = behaviour('connect', {});
      if (act === 'cut') return cb(Object.assign(new Error('cut'), { responseCode: 421 }));
      cb(act ? reply(act) : undefined);
    },
    onAuth(auth, session, cb) {
      const act = behaviour('auth', { user: auth.username ?? '' });
      if (act && act !== 'cut') return cb(reply(act));
      const expected = options.users?.[auth.username ?? ''];
      if (expected === undefined || expected !== auth.password) {
        return cb(Object.assign(new Error('5.7.8 Authentication credentials invalid'), { responseCode: 535 }));
      }
      passwords.set(session.id, auth.password ?? '');
      cb(null, { user: auth.username });
    },
    onMailFrom(address, session, cb) {
      const act = behaviour('mail', { address: address.address, user: userOf(session) });
      cb(act && act !== 'cut' ? reply(act) : undefined);
    },
    onRcptTo(address, session, cb) {
      const act = behaviour('rcpt', { address: address.address, user: userOf(session) });
      cb(act && act !== 'cut' ? reply(act) : undefined);
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', async () => {
        const raw = Buffer.concat(chunks);
        const user = userOf(session);
        const pass = passwords.get(session.id);
        const mail: ReceivedMail = {
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((r) => r.address),
          ...(user !== undefined ? { user } : {}),
          ...(pass !== undefined ? { pass } : {}),
          secure: session.secure,
          raw,
          parsed: await simpleParser(raw),
          session: session.id,
        };
        const act = behaviour('data', { user, mail });
        if (act === 'cut') {
          if (options.keepCut !== false) push(mail);
          for (const c of (server as unknown as { connections: Set<{ session?: SMTPServerSession; _socket: Socket }> })
            .connections) {
            if (c.session?.id === session.id) c._socket.destroy();
          }
          return;
        }
        if (act) return cb(reply(act));
        push(mail);
        cb(null, `Ok: queued as ${session.id}`);
      });
    },
  });
  server.on('error', () => {});
  function push(mail: ReceivedMail) {
    received.push(mail);
    for (const w of waiters.splice(0)) w();
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = ((server as unknown as { server: Server }).server.address() as AddressInfo).port;
  return {
    host: '127.0.0.1',
    port,
    ca: cert,
    received,
    get connections() {
      return state.connections;
    },
    async waitFor(n, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      while (received.length < n) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`the sink received ${received.length} mails, expected ${n}`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, Math.min(left, 200));
          waiters.push(() => {
            clearTimeout(t);
            resolve();
          });
        });
      }
      return received;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

function userOf(session: SMTPServerSession): string | undefined {
  const u = session.user as unknown;
  return typeof u === 'string' ? u : undefined;
}

/** A TCP listener that accepts connections and never says a word (a black-holed SMTP server). */
export async function startSilentListener(): Promise<{ port: number; connections: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const state = { connections: 0 };
  const server = createServer((s) => {
    state.connections++;
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    get connections() {
      return state.connections;
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A loopback port with nothing listening (connecting to it is refused at once). */
export async function refusedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** A free loopback port (for servers started by other programs: Exim, Dante). */
export const freePort = refusedPort;
