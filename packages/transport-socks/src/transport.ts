import { isLoopbackHost, RouteConfigError, type SmtpRouteOptions, smtp, type Transport } from '@mailvia/core';
import { resolveProxy, type SocksProxy } from './config.js';
import { openTunnel } from './connect.js';

/** Options of {@link createSocksTransport}: core's SMTP options, and the proxy to go through. */
export interface SocksTransportOptions extends Omit<SmtpRouteOptions, 'connect'> {
  /** The SOCKS5 proxy: `socks5h://user:pass@proxy.example:1080` or an object. */
  proxy: SocksProxy;
  /**
   * How long the proxy may take to set the connection up (TCP to the proxy, SOCKS handshake, the
   * proxy's connection to the server). The SMTP greeting then has `greetingTimeout`.
   * @default `connectionTimeout`, else 5000
   */
  proxyTimeout?: number;
}

/**
 * An SMTP route that leaves through a SOCKS5 proxy: core's `smtp()` route (pooled, STARTTLS or
 * implicit TLS, AUTH, the same timeouts and classification) whose connections are opened by
 * {@link socksConnect}, so no greeting is ever lost.
 *
 * Its name is `smtp://user@host:port?proxy=socks5h://proxyuser@proxy:port` (no password).
 * TLS is required unless both the proxy and the server are on loopback: the SOCKS link itself
 * is clear text, so the server's "loopback" is not this machine's.
 *
 * @example
 * ```ts
 * const gmail = createSocksTransport({
 *   host: 'smtp.gmail.com', port: 587,
 *   auth: { user: 'school@example.org', pass: process.env.APP_PASSWORD! },
 *   proxy: process.env.SOCKS_PROXY!, // socks5h://user:pass@proxy.example:1080
 * });
 * ```
 */
export function createSocksTransport(options: SocksTransportOptions): Transport {
  const { proxy, proxyTimeout, ...smtpOptions } = options;
  if (proxy === undefined || proxy === null || proxy === '') throw new RouteConfigError('proxy', 'is required');
  const p = resolveProxy(proxy);
  if (!smtpOptions.host || typeof smtpOptions.host !== 'string') throw new RouteConfigError('host', 'is required');
  const secure = smtpOptions.secure ?? smtpOptions.port === 465;
  const port = smtpOptions.port ?? (secure ? 465 : 587);
  const host = smtpOptions.host.replace(/^\[|\]$/g, '');
  const hostPart = host.includes(':') ? `[${host}]` : host;
  const name =
    smtpOptions.name ??
    `smtp${secure ? 's' : ''}://${smtpOptions.auth ? `${smtpOptions.auth.user}@` : ''}${hostPart}:${port}?proxy=${p.display}`;
  // the SOCKS link is clear text: the target's loopback is only local when the proxy is too
  const local = isLoopbackHost(p.host) && isLoopbackHost(host);
  const requireTLS = smtpOptions.requireTLS ?? !local;
  if (!requireTLS && !secure && smtpOptions.auth && !local) {
    throw new RouteConfigError(
      'requireTLS',
      `AUTH would be sent in clear text through the proxy ${p.display}; only a loopback proxy to a loopback server may do that`,
    );
  }
  const timeout = proxyTimeout ?? smtpOptions.connectionTimeout ?? 5000;
  return smtp({
    ...smtpOptions,
    requireTLS,
    name,
    connect: (target, o?: { signal?: AbortSignal }) => openTunnel(p, target, { timeout, route: name }, o?.signal),
  });
}
