import { type AddressInfo, createServer, type Socket } from 'node:net';

/** A mail as the immediate-greeting server received it. */
export interface ImmediateMail {
  from: string;
  to: string[];
  data: string;
  /** The client's port as this server saw it (Dante's outgoing port when proxied). */
  remotePort: number;
}

/** A tiny SMTP server that greets the moment it accepts, as Exim, Postfix and Gmail do. */
export interface ImmediateSmtpServer {
  host: '127.0.0.1';
  port: number;
  received: ImmediateMail[];
  /** Connections accepted so far. */
  connections: number;
  close(): Promise<void>;
}

/**
 * Starts an SMTP server on 127.0.0.1 that writes its `220` greeting in the same turn it accepts
 * a connection (smtp-server waits 100 ms, which hides a lost greeting). It speaks just enough
 * SMTP for a client without TLS or AUTH: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT.
 */
export async function startImmediateSmtpServer(
  options: {
    /** Never answer the final dot of a mail this returns true for (a server that hangs after DATA). */
    hangAfterData?: (mail: ImmediateMail) => boolean;
  } = {},
): Promise<ImmediateSmtpServer> {
  const received: ImmediateMail[] = [];
  const sockets = new Set<Socket>();
  const state = { connections: 0 };
  const server = createServer((socket) => {
    state.connections++;
    sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    socket.write('220 immediate.test ESMTP ready\r\n');
    let buffer = '';
    let inData = false;
    let data: string[] = [];
    let from = '';
    let to: string[] = [];
    const reply = (line: string) => socket.write(`${line}\r\n`);
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('latin1');
      for (let i = buffer.indexOf('\r\n'); i >= 0; i = buffer.indexOf('\r\n')) {
        const line = buffer.slice(0, i);
        buffer = buffer.slice(i + 2);
        if (inData) {
          if (line === '.') {
            inData = false;
            const mail = { from, to, data: data.join('\r\n'), remotePort: socket.remotePort ?? 0 };
            received.push(mail);
            if (!options.hangAfterData?.(mail)) reply(`250 2.0.0 Ok: queued as ${received.length}`);
            data = [];
            from = '';
            to = [];
          } else data.push(line.startsWith('..') ? line.slice(1) : line);
          continue;
        }
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === 'EHLO') {
          reply('250-immediate.test');
          reply('250-8BITMIME');
          reply('250 SMTPUTF8');
        } else if (verb === 'HELO') reply('250 immediate.test');
        else if (verb === 'MAIL') {
          from = /<([^>]*)>/.exec(line)?.[1] ?? '';
          to = [];
          reply('250 2.1.0 Ok');
        } else if (verb === 'RCPT') {
          to.push(/<([^>]*)>/.exec(line)?.[1] ?? '');
          reply('250 2.1.5 Ok');
        } else if (verb === 'DATA') {
          inData = true;
          reply('354 End data with <CR><LF>.<CR><LF>');
        } else if (verb === 'RSET') {
          from = '';
          to = [];
          reply('250 2.0.0 Ok');
        } else if (verb === 'NOOP') reply('250 2.0.0 Ok');
        else if (verb === 'QUIT') {
          reply('221 2.0.0 Bye');
          socket.end();
        } else reply('502 5.5.2 Command not recognized');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    host: '127.0.0.1',
    port: (server.address() as AddressInfo).port,
    received,
    get connections() {
      return state.connections;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
