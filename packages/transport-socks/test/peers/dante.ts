import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '@mailvia/core/testing';

/** Options of {@link startDante}. */
export interface DanteOptions {
  /** Require username/password (RFC 1929), checked by Dante against the system's users. */
  auth?: boolean;
  /** Destinations the proxy's rules refuse (`socks block`), as `127.0.0.1/32 port = N` targets. */
  blockPorts?: number[];
  /**
   * Extra /etc/hosts lines seen only by this Dante: it runs in its own mount namespace
   * (`unshare --mount`) with a hosts file bind-mounted over /etc/hosts. Needs root.
   */
  hosts?: string[];
}

/** A running Dante proxy on loopback, owned by the test. */
export interface Dante {
  host: '127.0.0.1';
  port: number;
  pid: number;
  /** Its log so far. */
  log(): string;
  /** Waits until the log matches (Dante writes a line when a session starts and when it ends). */
  waitForLog(test: RegExp | ((log: string) => boolean), timeoutMs?: number): Promise<string>;
  stop(): Promise<void>;
}

/** Where `danted` is; throws (never skips) when Dante is not installed. */
export function danteBinary(): string {
  for (const p of ['/usr/sbin/danted', '/usr/local/sbin/danted']) if (existsSync(p)) return p;
  try {
    return execFileSync('sh', ['-c', 'command -v danted'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error('danted is not installed: these tests need a real SOCKS5 proxy (apt-get install -y dante-server)');
  }
}

export function requireRoot(why: string): void {
  if (process.getuid?.() !== 0) throw new Error(`these tests must run as root: ${why}`);
}

/** Starts Dante with its own config on a free loopback port; its log goes to a temp file. */
export async function startDante(options: DanteOptions = {}): Promise<Dante> {
  const bin = danteBinary();
  requireRoot('Dante switches to user nobody and checks proxy passwords against the system users');
  const dir = mkdtempSync(join(tmpdir(), 'mailvia-dante-'));
  const port = await freePort();
  const logFile = join(dir, 'danted.log');
  const conf = join(dir, 'danted.conf');
  const blocks = (options.blockPorts ?? [])
    .map((p) => `socks block {\n  from: 0.0.0.0/0 to: 127.0.0.1/32 port = ${p}\n  log: connect error\n}\n`)
    .join('');
  writeFileSync(
    conf,
    [
      `logoutput: ${logFile}`,
      `internal: 127.0.0.1 port = ${port}`,
      'external: 127.0.0.1',
      'clientmethod: none',
      `socksmethod: ${options.auth ? 'username' : 'none'}`,
      'user.privileged: root',
      'user.unprivileged: nobody',
      'client pass {\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  log: error\n}',
      blocks,
      'socks pass {\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  command: connect\n  log: connect disconnect error\n}',
      '',
    ].join('\n'),
  );
  const args = ['-f', conf, '-p', join(dir, 'danted.pid')];
  let child: ChildProcess;
  if (options.hosts?.length) {
    const hosts = join(dir, 'hosts');
    writeFileSync(hosts, `${readFileSync('/etc/hosts', 'utf8')}\n${options.hosts.join('\n')}\n`);
    // unshare execs the shell, which execs danted: the child's pid is Dante's
    child = spawn(
      'unshare',
      [
        '--mount',
        '--propagation',
        'private',
        'sh',
        '-c',
        'mount --bind "$0" /etc/hosts && exec "$@"',
        hosts,
        bin,
        ...args,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
  } else {
    child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  }
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // if the test process ends without stop(), do not leave a proxy behind
  const killOnExit = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  };
  process.once('exit', killOnExit);
  const log = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`danted exited at start (${child.exitCode ?? child.signalCode}): ${stderr}${log()}`);
    }
    if (await listening(port)) break;
    if (Date.now() > deadline) {
      child.kill('SIGTERM');
      throw new Error(`danted did not listen on 127.0.0.1:${port} within 10 s: ${stderr}${log()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    host: '127.0.0.1',
    port,
    pid: child.pid!,
    log,
    async waitForLog(test, timeoutMs = 5000) {
      const end = Date.now() + timeoutMs;
      const ok = typeof test === 'function' ? test : (text: string) => test.test(text);
      for (;;) {
        const text = log();
        if (ok(text)) return text;
        if (Date.now() > end) throw new Error(`Dante's log does not show ${String(test)}:\n${text.slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop() {
      process.removeListener('exit', killOnExit);
      if (child.exitCode === null && child.signalCode === null) {
        process.kill(child.pid!, 'SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
        if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** A throwaway system user for Dante's `socksmethod: username`, with an obviously fake password. */
export function createProxyUser(name: string, pass: string): { user: string; pass: string; remove(): void } {
  requireRoot('a throwaway system user is created for the proxy password check');
  const run = (cmd: string, args: string[], input?: string) => {
    // /etc/passwd may be locked for a moment by another test file doing the same
    for (let i = 0; ; i++) {
      try {
        return execFileSync(cmd, args, { input, stdio: ['pipe', 'ignore', 'pipe'] });
      } catch (e) {
        if (i >= 20) throw e;
        execFileSync('sleep', ['0.1']);
      }
    }
  };
  let exists = true;
  try {
    execFileSync('id', [name], { stdio: 'ignore' });
  } catch {
    exists = false;
  }
  if (!exists) run('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', name]);
  run('chpasswd', [], `${name}:${pass}\n`);
  return {
    user: name,
    pass,
    remove() {
      run('userdel', [name]);
    },
  };
}
