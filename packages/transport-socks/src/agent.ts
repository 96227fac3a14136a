import type { Agent, AgentOptions, ClientRequest } from 'node:http';
import { isIP, type Socket } from 'node:net';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import { SocksProxyAgent } from 'socks-proxy-agent';
import { type ResolvedProxy, resolveProxy, type SocksProxy } from './config.js';
import { openTunnel, type SocksConnectOptions } from './connect.js';

/** Options of {@link socksAgent}: those of `http.Agent`, and how long the proxy may take. */
export interface SocksAgentOptions extends AgentOptions {
  /**
   * How long the proxy may take to set a connection up (TCP to the proxy, SOCKS handshake, its
   * connection to the API host). Distinct from `timeout`, the idle timeout of the sockets.
   * @default 5000
   */
  connectTimeout?: number;
  /** The route name the errors carry. @default the proxy, e.g. `socks5h://user@proxy.example:1080` */
  route?: string;
  /** Resolves host names here for a `socks5://` proxy. @default `dns.promises.lookup` */
  lookup?: SocksConnectOptions['lookup'];
}

type ConnectOpts = Parameters<SocksProxyAgent['connect']>[1];

class SocksTunnelAgent extends SocksProxyAgent {
  readonly #proxy: ResolvedProxy;
  readonly #options: SocksConnectOptions;

  constructor(proxy: ResolvedProxy, options: SocksAgentOptions) {
    const { connectTimeout, route, lookup, ...agentOptions } = options;
    // the base class keeps its URL in a public field: give it one without credentials
    const host = proxy.host.includes(':') ? `[${proxy.host}]` : proxy.host;
    super(`socks5${proxy.remoteDns ? 'h' : ''}://${host}:${proxy.port}`, { keepAlive: true, ...agentOptions });
    this.#proxy = proxy;
    this.#options = {
      ...(connectTimeout !== undefined ? { timeout: connectTimeout } : {}),
      ...(route !== undefined ? { route } : {}),
      ...(lookup !== undefined ? { lookup } : {}),
    };
  }

  override async connect(_req: ClientRequest, opts: ConnectOpts): Promise<Socket> {
    const host = opts.host ?? 'localhost';
    const port = typeof opts.port === 'number' ? opts.port : Number(opts.port);
    const socket = await openTunnel(this.#proxy, { host, port }, this.#options);
    if (!opts.secureEndpoint) {
      // an HTTP server says nothing before the request, so nothing is buffered: let it flow
      socket.resume();
      return socket;
    }
    const {
      host: _h,
      port: _p,
      path: _path,
      ...tlsOptions
    } = opts as ConnectOpts & {
      path?: unknown;
      servername?: string;
    };
    const servername = tlsOptions.servername ?? (isIP(host) ? undefined : host);
    const tls: TLSSocket = tlsConnect({ ...tlsOptions, ...(servername ? { servername } : {}), socket });
    return tls;
  }
}

/**
 * An `http.Agent` (for `http` and `https` requests alike) that tunnels through a SOCKS5 proxy:
 * give it to an API route's `agent` option (SendGrid, Gmail API, SES, Mailgun) so a host that
 * blocks outbound traffic can reach the APIs too. Built on `socks-proxy-agent`, with this
 * package's tunnel: connection failures are classified {@link MailError}s (phase `connect`),
 * the same as for SMTP. Keep-alive is on by default.
 *
 * Node's global `fetch` (undici) does not take an `http.Agent`; use it with clients built on
 * `http`/`https` (axios, gaxios, the AWS SDK's `NodeHttpHandler`).
 *
 * @example
 * ```ts
 * const agent = socksAgent('socks5h://user:pass@proxy.example:1080');
 * https.get('https://api.sendgrid.com/v3/scopes', { agent, headers }, onResponse);
 * ```
 */
export function socksAgent(proxy: SocksProxy, options: SocksAgentOptions = {}): Agent {
  return new SocksTunnelAgent(resolveProxy(proxy), options);
}
