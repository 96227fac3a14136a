import { connect, type Socket } from 'node:net';

/** One SMTP reply. */
export interface SmtpReply {
  code: number;
  /** The text of every line, without the code. */
  lines: string[];
  /** The last line, as the server wrote it (`550 5.7.1 …`). */
  text: string;
}

/**
 * A bare SMTP conversation for the doctor's probes (greeting, EHLO, AUTH, MAIL, RCPT — never
 * DATA: a probe sends no mail). Plain text: it talks to the relay on loopback only.
 */
export class SmtpProbe {
  private buffer = '';
  private lines: string[] = [];
  private waiting: { resolve(r: SmtpReply): void; reject(e: Error): void } | undefined;
  private failure: Error | undefined;

  private constructor(
    private readonly socket: Socket,
    private readonly timeoutMs: number,
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (e) => this.fail(e));
    socket.on('close', () => this.fail(new Error('the connection closed')));
  }

  /** Connects and reads the greeting. */
  static async open(host: string, port: number, timeoutMs = 5000): Promise<{ probe: SmtpProbe; greeting: SmtpReply }> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect({ host, port });
      const t = setTimeout(() => {
        s.destroy();
        reject(
          Object.assign(new Error(`no connection to ${host}:${port} within ${timeoutMs} ms`), { code: 'ETIMEDOUT' }),
        );
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(t);
        resolve(s);
      });
      s.once('error', (e) => {
        clearTimeout(t);
        reject(e);
      });
    });
    const probe = new SmtpProbe(socket, timeoutMs);
    const greeting = await probe.read();
    return { probe, greeting };
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let i = this.buffer.indexOf('\n');
    while (i >= 0) {
      const line = this.buffer.slice(0, i).replace(/\r$/, '');
      this.buffer = this.buffer.slice(i + 1);
      this.lines.push(line);
      if (/^\d{3}( |$)/.test(line) || !/^\d{3}-/.test(line)) {
        const all = this.lines;
        this.lines = [];
        const reply: SmtpReply = { code: Number(line.slice(0, 3)) || 0, lines: all.map((l) => l.slice(4)), text: line };
        const w = this.waiting;
        this.waiting = undefined;
        w?.resolve(reply);
      }
      i = this.buffer.indexOf('\n');
    }
  }

  private fail(e: Error): void {
    this.failure ??= e;
    const w = this.waiting;
    this.waiting = undefined;
    w?.reject(e);
  }

  private read(): Promise<SmtpReply> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiting = undefined;
        reject(new Error(`no answer within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.waiting = {
        resolve: (r) => {
          clearTimeout(t);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(t);
          reject(e);
        },
      };
    });
  }

  /** Sends one command line and reads the reply. */
  command(line: string): Promise<SmtpReply> {
    if (this.failure) return Promise.reject(this.failure);
    const reply = this.read();
    this.socket.write(`${line}\r\n`);
    return reply;
  }

  /** AUTH PLAIN with a user and password (the password never appears in any reply or error). */
  authPlain(user: string, pass: string): Promise<SmtpReply> {
    return this.command(`AUTH PLAIN ${Buffer.from(`\0${user}\0${pass}`, 'utf8').toString('base64')}`);
  }

  /** QUIT and close. */
  async close(): Promise<void> {
    if (!this.failure) await this.command('QUIT').catch(() => undefined);
    this.socket.destroy();
  }
}
