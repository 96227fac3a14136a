import {
  intParam,
  maskUrl,
  type RouteConfig,
  RouteConfigError,
  type RouteFactory,
  smtpRoute,
  type Transport,
} from '@mailvia/core';
import { socksAgent } from './agent.js';
import { resolveProxy, type SocksProxy } from './config.js';
import { createSocksTransport, type SocksTransportOptions } from './transport.js';

const PROXY_PARAMS = ['proxy', 'proxyTimeout'] as const;

/** The URL without its proxy parameters, and a masked form of the whole for messages. */
function split(url: URL): { inner: URL; proxy: string | null; where: string } {
  const inner = new URL(url.href);
  for (const k of PROXY_PARAMS) inner.searchParams.delete(k);
  const proxy = url.searchParams.get('proxy');
  // core's maskUrl hides only the first password; the proxy URL carries its own
  const where = `${maskUrl(inner.href)}${proxy ? `${inner.search ? '&' : '?'}proxy=${maskUrl(proxy)}` : ''}`;
  return { inner, proxy, where };
}

/**
 * A replacement for core's `smtp` factory (type `smtp`, schemes `smtp` and `smtps`) that also
 * accepts `?proxy=` — the SOCKS5 proxy URL, percent-encoded as a query value — and
 * `?proxyTimeout=` (ms). Without `proxy` it builds exactly core's route. Pass it to the mailer's
 * `factories`: a later factory for the same type and schemes replaces core's.
 *
 * @example
 * ```ts
 * createMailer({ factories: [socksSmtpRoute], routes: `smtp://u:p@smtp.gmail.com:587?proxy=${encodeURIComponent('socks5h://pu:pp@proxy.example:1080')}` });
 * ```
 */
export const socksSmtpRoute: RouteFactory = {
  type: 'smtp',
  schemes: ['smtp', 'smtps'],
  fromUrl(url) {
    const { inner, proxy, where } = split(url);
    // core parses everything else, so this factory accepts exactly what core's does
    const config = smtpRoute.fromUrl(inner);
    const q = url.searchParams;
    if (q.has('proxy')) {
      if (!proxy) throw new RouteConfigError('query.proxy', 'is empty', where);
      resolveProxy(proxy, 'query.proxy');
      config.proxy = proxy;
    }
    if (q.has('proxyTimeout')) {
      if (!proxy) throw new RouteConfigError('query.proxyTimeout', 'needs query.proxy', where);
      config.proxyTimeout = intParam(q.get('proxyTimeout'), 'query.proxyTimeout', where);
    }
    return config;
  },
  create(config, context) {
    if (config.proxy === undefined) return smtpRoute.create(config, context);
    const { type: _t, ...options } = config;
    return createSocksTransport(options as unknown as SocksTransportOptions);
  },
};

/** The fields of a `socks` route: `{ type: 'socks', proxy, route }`. */
export interface SocksRouteConfig {
  type: 'socks';
  /** The SOCKS5 proxy: `socks5h://user:pass@proxy.example:1080` or an object. */
  proxy: SocksProxy;
  /**
   * The route to take through the proxy: an `smtp`/`smtps` URL or an `smtp` route object (its
   * connections go through the proxy), or the object of any route whose factory takes an
   * `agent` field (the HTTP API routes: they get {@link socksAgent}).
   */
  route: string | RouteConfig;
  /** How long the proxy may take to set a connection up, in ms. @default 5000 */
  proxyTimeout?: number;
}

/**
 * The `socks` factory: a route that wraps another and sends it through a SOCKS5 proxy.
 * Object form only (`{ type: 'socks', proxy, route }`); for URLs use {@link socksSmtpRoute}'s
 * `smtp://…?proxy=…`.
 *
 * @example
 * ```ts
 * { type: 'socks', proxy: 'socks5h://user:pass@127.0.0.1:1080', route: { type: 'smtp', host: 'smtp.gmail.com', port: 587, auth } }
 * ```
 */
export const socksRoute: RouteFactory = {
  type: 'socks',
  schemes: [],
  fromUrl() {
    throw new RouteConfigError(
      'scheme',
      'a socks route is an object ({ type: "socks", proxy, route }); as a URL, use smtp://…?proxy=socks5h://…',
    );
  },
  create(config, context): Transport {
    const { proxy, route, proxyTimeout } = config as unknown as SocksRouteConfig;
    if (proxy === undefined || proxy === null || proxy === '') throw new RouteConfigError('proxy', 'is required');
    resolveProxy(proxy);
    if (proxyTimeout !== undefined && (!Number.isInteger(proxyTimeout) || proxyTimeout < 1)) {
      throw new RouteConfigError('proxyTimeout', `${String(proxyTimeout)} is not a positive whole number of ms`);
    }
    let inner: RouteConfig;
    if (typeof route === 'string') {
      let url: URL;
      try {
        url = new URL(route);
      } catch {
        throw new RouteConfigError('route', 'does not parse as a URL', maskUrl(route));
      }
      if (url.protocol !== 'smtp:' && url.protocol !== 'smtps:') {
        throw new RouteConfigError(
          'route',
          'only smtp:// and smtps:// routes may be given as URLs; give other routes as objects (they get an agent)',
          maskUrl(route),
        );
      }
      inner = socksSmtpRoute.fromUrl(url);
    } else if (typeof route === 'object' && route !== null && !Array.isArray(route) && typeof route.type === 'string') {
      if ('send' in route) throw new RouteConfigError('route', 'must be route data, not a built transport');
      inner = route;
    } else {
      throw new RouteConfigError('route', 'must be an smtp URL or a route object with a type');
    }
    if (inner.proxy !== undefined || inner.agent !== undefined) {
      throw new RouteConfigError('route', 'already has a proxy or an agent of its own');
    }
    if (inner.type === 'smtp') {
      const { type: _t, ...options } = inner;
      return createSocksTransport({
        ...(options as unknown as Omit<SocksTransportOptions, 'proxy'>),
        proxy,
        ...(proxyTimeout !== undefined ? { proxyTimeout } : {}),
      });
    }
    return context.build({
      ...inner,
      agent: socksAgent(proxy, proxyTimeout !== undefined ? { connectTimeout: proxyTimeout } : {}),
    });
  },
};

/** Both factories of this package, for `createMailer({ factories: [...socksRoutes] })`. */
export const socksRoutes: readonly RouteFactory[] = [socksSmtpRoute, socksRoute];
