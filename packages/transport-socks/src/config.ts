import { maskUrl, RouteConfigError } from '@mailvia/core';

/**
 * A SOCKS5 proxy, as an object. A URL string (`socks5h://user:pass@proxy.example:1080`) may be
 * given wherever a proxy is asked for instead.
 */
export interface SocksProxyOptions {
  /** The proxy's host name or address. */
  host: string;
  /** @default 1080 */
  port?: number;
  /** The SOCKS version. Only SOCKS5 is supported. @default 5 */
  type?: 5;
  /** Username for the proxy's username/password authentication (RFC 1929). */
  user?: string;
  /** Password for the proxy's username/password authentication. */
  pass?: string;
  /**
   * Let the proxy resolve the target's host name (`socks5h`): no DNS query leaves this machine,
   * and names only the proxy's network knows work. When false (`socks5`), the name is resolved
   * here and the proxy is given an address.
   * @default true
   */
  remoteDns?: boolean;
}

/** A proxy as a URL (`socks5h://…`, `socks5://…`) or an object. */
export type SocksProxy = string | SocksProxyOptions;

/** A proxy with every default filled in. */
export interface ResolvedProxy {
  host: string;
  port: number;
  type: 5;
  user: string | undefined;
  pass: string | undefined;
  remoteDns: boolean;
  /** `socks5h://user@host:port`: the proxy without its password, for names and messages. */
  display: string;
}

const SCHEMES: Record<string, boolean> = { 'socks5h:': true, 'socks:': true, 'socks5:': false };

/**
 * Parses and checks a proxy description. Throws a {@link RouteConfigError} naming the bad part,
 * never echoing the password.
 */
export function resolveProxy(proxy: SocksProxy, part = 'proxy'): ResolvedProxy {
  if (typeof proxy === 'string') return fromUrl(proxy, part);
  if (typeof proxy !== 'object' || proxy === null)
    throw new RouteConfigError(part, 'must be a socks5h:// URL or an object');
  const { host } = proxy;
  if (!host || typeof host !== 'string') throw new RouteConfigError(`${part}.host`, 'is required');
  if (proxy.type !== undefined && proxy.type !== 5) {
    throw new RouteConfigError(`${part}.type`, `SOCKS${String(proxy.type)} is not supported; only SOCKS5 is`);
  }
  const port = proxy.port ?? 1080;
  checkPort(port, `${part}.port`);
  if ((proxy.user === undefined) !== (proxy.pass === undefined)) {
    throw new RouteConfigError(part, 'give both user and pass, or neither');
  }
  checkCredential(proxy.user, proxy.pass, part);
  const remoteDns = proxy.remoteDns ?? true;
  return {
    host: host.replace(/^\[|\]$/g, ''),
    port,
    type: 5,
    user: proxy.user,
    pass: proxy.pass,
    remoteDns,
    display: display(remoteDns, proxy.user, host, port),
  };
}

function fromUrl(raw: string, part: string): ResolvedProxy {
  const where = maskUrl(raw);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new RouteConfigError(
      part,
      'does not parse as a URL (is a character in the password not percent-encoded?)',
      where,
    );
  }
  const remoteDns = SCHEMES[url.protocol];
  if (remoteDns === undefined) {
    throw new RouteConfigError(
      part,
      `"${url.protocol.replace(/:$/, '')}" is not a SOCKS5 proxy scheme (use socks5h:// or socks5://)`,
      where,
    );
  }
  if (!url.hostname) throw new RouteConfigError(`${part}.host`, 'is missing', where);
  if ((url.pathname && url.pathname !== '/') || url.search || url.hash) {
    throw new RouteConfigError(part, 'a proxy URL has no path, query or fragment', where);
  }
  const port = url.port ? Number(url.port) : 1080;
  checkPort(port, `${part}.port`, where);
  let user: string | undefined;
  let pass: string | undefined;
  if (url.username || url.password) {
    try {
      user = decodeURIComponent(url.username);
      pass = decodeURIComponent(url.password);
    } catch {
      throw new RouteConfigError(part, 'the user or password is not valid percent-encoding', where);
    }
  }
  checkCredential(user, pass, part, where);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return { host, port, type: 5, user, pass, remoteDns, display: display(remoteDns, user, host, port) };
}

function checkPort(port: unknown, part: string, where?: string): asserts port is number {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RouteConfigError(part, `${String(port)} is not a TCP port`, where);
  }
}

function checkCredential(user: string | undefined, pass: string | undefined, part: string, where?: string): void {
  // RFC 1929: each is 1 to 255 bytes
  for (const [name, v] of [
    ['user', user],
    ['pass', pass],
  ] as const) {
    if (v === undefined) continue;
    if (typeof v !== 'string') throw new RouteConfigError(`${part}.${name}`, 'must be a string', where);
    const n = Buffer.byteLength(v);
    if (n < 1 || n > 255)
      throw new RouteConfigError(`${part}.${name}`, 'must be 1 to 255 bytes long (RFC 1929)', where);
  }
}

function display(remoteDns: boolean, user: string | undefined, host: string, port: number): string {
  const h = host.includes(':') ? `[${host}]` : host;
  return `socks5${remoteDns ? 'h' : ''}://${user ? `${encodeURIComponent(user)}@` : ''}${h}:${port}`;
}
