import { mkdirSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';

/** A mail the stand-in upstream received. */
export interface UpstreamMail {
  file: string;
  account: string;
  from: string;
  to: string[];
  subject: string;
}

/**
 * An in-process SMTP server standing in for each organisation's real provider (smtp.gmail.com
 * and the like): it checks each account's password and keeps every mail as an .eml file.
 */
export async function startUpstream(accounts: Record<string, string>, dir: string) {
  mkdirSync(dir, { recursive: true });
  const received: UpstreamMail[] = [];
  const server = new SMTPServer({
    authMethods: ['PLAIN', 'LOGIN'],
    allowInsecureAuth: true, // loopback only; a real upstream is reached over TLS
    hideSTARTTLS: true,
    disableReverseLookup: true,
    logger: false,
    onAuth(auth, _session, cb) {
      if (accounts[auth.username ?? ''] !== auth.password)
        return cb(new Error('5.7.8 Username and Password not accepted'));
      cb(null, { user: auth.username });
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', async () => {
        const raw = Buffer.concat(chunks);
        const parsed = await simpleParser(raw);
        const file = join(dir, `${Date.now()}-${session.id}.eml`);
        writeFileSync(file, raw);
        received.push({
          file,
          account: String(session.user),
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((r) => r.address),
          subject: parsed.subject ?? '',
        });
        cb(null, `Ok: queued as ${session.id}`);
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = (server as unknown as { server: import('node:net').Server }).server.address() as AddressInfo;
  return { port, received, close: () => new Promise<void>((r) => server.close(() => r())) };
}
