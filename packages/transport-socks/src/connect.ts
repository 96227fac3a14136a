import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP, type Socket, connect as tcpConnect } from 'node:net';
import type { Duplex } from 'node:stream';
import { abortReason, failure, MailError, redact } from '@mailvia/core';
import { SocksClient, type SocksClientOptions } from 'socks';
import { type ResolvedProxy, resolveProxy, type SocksProxy } from './config.js';
import { SOCKS_CODES, socksErrorCode, tunnelFailure } from './errors.js';

/** Options of {@link socksConnect}. */
export interface SocksConnectOptions {
  /**
   * How long the whole set-up may take: the TCP connection to the proxy, the SOCKS handshake and
   * the proxy's own connection to the target. Past it the route is `unavailable` (nothing was sent).
   * @default 5000
   */
  timeout?: number;
  /** The route name the errors carry. @default the proxy, e.g. `socks5h://user@proxy.example:1080` */
  route?: string;
  /**
   * Resolves a host name here when the proxy is `socks5://` (not `socks5h`). Not called for
   * `socks5h`, nor for addresses.
   * @default `dns.promises.lookup`
   */
  lookup?: (host: string) => Promise<string>;
}

/** Where to go through the proxy. */
export interface SocksTarget {
  host: string;
  port: number;
}

/**
 * Opens a connection to a target through the proxy: what core's `smtp({ connect })` takes. An
 * aborted `signal` stops the set-up (and closes the socket) with an `unavailable` MailError.
 */
export type SocksConnector = (target: SocksTarget, options?: { signal?: AbortSignal }) => Promise<Duplex>;

/**
 * A `connect` function for core's `smtp()` route (or anything that takes a connected socket)
 * that goes through a SOCKS5 proxy.
 *
 * It never loses the bytes the target sends at once. The `socks` library reads the proxy's
 * reply and, when the target's first bytes (an SMTP server's `220` greeting) arrived in the same
 * read, re-emits them as a `'data'` event on a later turn of the event loop, before the SMTP
 * client has attached its listener: the greeting is lost and the send fails with "Greeting never
 * received" (nodemailer issues #1760, #1684). Here those bytes are caught, the socket is paused
 * and they are put back at the front of its buffer (`unshift`), so whoever reads the socket first
 * sees the whole stream from its first byte.
 *
 * Errors are {@link MailError}s with phase `connect`: proxy unreachable or a target it cannot reach
 * → `unavailable`; proxy password wrong, or the proxy's rules refuse the destination →
 * `misconfigured`. A bad proxy description throws a `RouteConfigError` at once, not on connect.
 *
 * @example
 * ```ts
 * const route = smtp({ host: 'smtp.gmail.com', port: 587, auth, connect: socksConnect('socks5h://proxy.example:1080') });
 * ```
 */
export function socksConnect(proxy: SocksProxy, options: SocksConnectOptions = {}): SocksConnector {
  const p = resolveProxy(proxy);
  return (target, o) => openTunnel(p, target, options, o?.signal);
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Opens a tunnel through a resolved proxy; the socket is paused, with nothing lost. */
export async function openTunnel(
  p: ResolvedProxy,
  target: SocksTarget,
  options: SocksConnectOptions,
  signal?: AbortSignal,
): Promise<Socket> {
  const route = options.route ?? p.display;
  const stopped = () =>
    new MailError(`${route}: ${abortReason(signal!)} while connecting through the SOCKS proxy ${p.display}`, {
      kind: 'unavailable',
      phase: 'connect',
      route,
      code: 'EABORT',
    });
  if (signal?.aborted) throw stopped();
  let socket: Socket | undefined;
  const work = tunnel(p, target, options, route, (s) => {
    socket = s;
  });
  if (!signal) return work;
  let onAbort = () => {};
  const abort = new Promise<never>((_, reject) => {
    onAbort = () => {
      socket?.destroy();
      reject(stopped());
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([work, abort]);
  } finally {
    signal.removeEventListener('abort', onAbort);
    // a tunnel that was still being opened when the signal fired is not handed to anyone
    if (signal.aborted)
      work.then(
        (s) => s.destroy(),
        () => {},
      );
  }
}

async function tunnel(
  p: ResolvedProxy,
  target: SocksTarget,
  options: SocksConnectOptions,
  route: string,
  opened: (socket: Socket) => void,
): Promise<Socket> {
  const timeout = options.timeout ?? 5000;
  const deadline = Date.now() + timeout;
  const targetName = `${target.host.includes(':') ? `[${target.host}]` : target.host}:${target.port}`;
  const secrets = [p.pass];
  const fail = (toProxy: boolean, code: string | undefined, detail: string) =>
    tunnelFailure({ route, proxy: p.display, target: targetName, toProxy, code, detail, secrets });

  let host = target.host.replace(/^\[|\]$/g, '');
  if (!p.remoteDns && !isIP(host)) {
    try {
      host = await (options.lookup ?? ((h: string) => dnsLookup(h).then((r) => r.address)))(host);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw failure({
        route,
        phase: 'connect',
        message: `${host} does not resolve here (the proxy is socks5://, so names are resolved locally; socks5h:// lets the proxy resolve them): ${e.message}`,
        ...(e.code ? { errorCode: e.code } : {}),
        text: e.message,
      });
    }
  }

  const socket = await connectToProxy(p, deadline - Date.now()).catch((err: NodeJS.ErrnoException) => {
    throw fail(true, err.code ?? socksErrorCode(err.message), err.message);
  });
  opened(socket);
  socket.setNoDelay(true);
  return handshake(socket, p, host, target.port, Math.max(1, deadline - Date.now()), fail);
}

function connectToProxy(p: ResolvedProxy, timeout: number): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const socket = tcpConnect({ host: p.host, port: p.port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        Object.assign(new Error(`connect ETIMEDOUT ${p.host}:${p.port} (no answer in ${timeout} ms)`), {
          code: 'ETIMEDOUT',
        }),
      );
    }, timeout);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeListener('error', onError);
      resolve(socket);
    });
    const onError = (err: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    socket.once('error', onError);
  });
}

function handshake(
  socket: Socket,
  p: ResolvedProxy,
  host: string,
  port: number,
  timeout: number,
  fail: (toProxy: boolean, code: string | undefined, detail: string) => MailError,
): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const options: SocksClientOptions = {
      command: 'connect',
      proxy: {
        host: p.host,
        port: p.port,
        type: 5,
        ...(p.user !== undefined ? { userId: p.user, password: p.pass ?? '' } : {}),
      },
      destination: { host, port },
      timeout,
      existing_socket: socket,
    };
    let client: SocksClient;
    try {
      client = new SocksClient(options);
    } catch (err) {
      socket.destroy();
      const message = redact((err as Error).message, [p.pass]);
      reject(fail(false, SOCKS_CODES.protocol, message));
      return;
    }
    // between the handshake and the hand-over the socket has no listener of its owner yet
    const onEarlyError = () => {};
    client.once('error', (err: Error) => {
      socket.destroy();
      reject(fail(false, socksErrorCode(err.message), err.message));
    });
    client.once('established', () => {
      // The library has paused the socket, and has scheduled (setImmediate) a re-emit of the bytes
      // it read past its reply, followed by a resume(). Catch what it emits and what flows on the
      // resume, then pause again and put it all back in front of the buffer.
      const early: Buffer[] = [];
      const collect = (chunk: Buffer) => early.push(chunk);
      socket.on('error', onEarlyError);
      socket.on('data', collect);
      void handOver();
      async function handOver() {
        await turn();
        // the library's re-emit was queued before this turn, so it has run; allow for a slower one
        for (let i = 0; i < 3 && socket.isPaused() && !socket.destroyed; i++) await turn();
        socket.removeListener('data', collect);
        socket.pause();
        socket.removeListener('error', onEarlyError);
        if (socket.destroyed || socket.readableEnded) {
          const said = Buffer.concat(early).toString('utf8').trim().slice(0, 200);
          socket.destroy();
          reject(
            fail(false, 'ECONNRESET', `the target closed the connection at once${said ? `, saying: ${said}` : ''}`),
          );
          return;
        }
        if (early.length) socket.unshift(early.length === 1 ? early[0]! : Buffer.concat(early));
        resolve(socket);
      }
    });
    client.connect(socket);
  });
}
