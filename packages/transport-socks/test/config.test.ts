import { createOutbox, MemoryRouteState, type RouteConfig, RouteConfigError, RouteRegistry } from '@mailvia/core';
import { describe, expect, it } from 'vitest';
import {
  createSocksTransport,
  resolveProxy,
  SOCKS_CODES,
  socksAgent,
  socksConnect,
  socksErrorCode,
  socksRoute,
  socksRoutes,
  socksSmtpRoute,
} from '../src/index.js';

const SECRET = 'fake-proxy-pass-gggg';

function configError(fn: () => unknown): RouteConfigError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(RouteConfigError);
    expect((e as Error).message).not.toContain(SECRET);
    return e as RouteConfigError;
  }
  throw new Error('expected a RouteConfigError');
}

describe('proxy descriptions', () => {
  it('reads socks5h:// and socks5:// URLs, with percent-encoded credentials', () => {
    expect(resolveProxy(`socks5h://u%40x:${SECRET}@proxy.example:1081`)).toEqual({
      host: 'proxy.example',
      port: 1081,
      type: 5,
      user: 'u@x',
      pass: SECRET,
      remoteDns: true,
      display: 'socks5h://u%40x@proxy.example:1081',
    });
    expect(resolveProxy('socks5://[::1]')).toMatchObject({ host: '::1', port: 1080, remoteDns: false });
    expect(resolveProxy('socks://proxy.example')).toMatchObject({ remoteDns: true });
    expect(resolveProxy({ host: 'proxy.example', user: 'u', pass: SECRET })).toMatchObject({
      port: 1080,
      remoteDns: true,
      display: 'socks5h://u@proxy.example:1080',
    });
  });

  it('refuses what it cannot honour, naming the part and never the password', () => {
    expect(configError(() => resolveProxy(`socks4://u:${SECRET}@p.example`)).part).toBe('proxy');
    expect(configError(() => resolveProxy(`http://u:${SECRET}@p.example:3128`)).message).toMatch(/not a SOCKS5/);
    expect(configError(() => resolveProxy(`socks5h://u:${SECRET}@p.example:99999`)).part).toBe('proxy');
    expect(configError(() => resolveProxy(`socks5h://u:${SECRET}@p.example/path`)).message).toMatch(/no path/);
    expect(configError(() => resolveProxy({ host: 'p.example', port: 0 })).part).toBe('proxy.port');
    expect(configError(() => resolveProxy({ host: 'p.example', user: 'u' })).message).toMatch(/both user and pass/);
    expect(configError(() => resolveProxy({ host: 'p.example', type: 4 as 5 })).part).toBe('proxy.type');
    expect(configError(() => resolveProxy({ host: 'p.example', user: 'u', pass: 'x'.repeat(256) })).part).toBe(
      'proxy.pass',
    );
    // built at once, not on the first send
    expect(configError(() => socksConnect(`socks4://p.example`)).part).toBe('proxy');
    expect(configError(() => socksAgent(`ftp://p.example`)).part).toBe('proxy');
  });

  it('reads the reply names of the socks library as codes', () => {
    expect(socksErrorCode('Socks5 proxy rejected connection - NotAllowed')).toBe(SOCKS_CODES.notAllowed);
    expect(socksErrorCode('Socks5 proxy rejected connection - HostUnreachable')).toBe(SOCKS_CODES.hostUnreachable);
    expect(socksErrorCode('Socks5 Authentication failed')).toBe(SOCKS_CODES.authFailed);
    expect(socksErrorCode('Received invalid Socks5 initial handshake (no accepted authentication type)')).toBe(
      SOCKS_CODES.authRequired,
    );
    expect(socksErrorCode('Proxy connection timed out')).toBe(SOCKS_CODES.timeout);
    expect(socksErrorCode('connect ECONNREFUSED 127.0.0.1:1')).toBe('ECONNREFUSED');
  });
});

describe('SMTP through a proxy: configuration', () => {
  it('requires TLS unless both the proxy and the server are on loopback (the SOCKS link is clear text)', () => {
    const auth = { user: 'u@example.org', pass: 'fake-app-password-aaaa' };
    expect(() =>
      createSocksTransport({ host: '127.0.0.1', auth, requireTLS: false, proxy: 'socks5h://proxy.example:1080' }),
    ).toThrow(/clear text through the proxy/);
    expect(() =>
      createSocksTransport({ host: '127.0.0.1', auth, requireTLS: false, proxy: 'socks5h://127.0.0.1:1080' }),
    ).not.toThrow();
  });

  it('names the route without either password', () => {
    const t = createSocksTransport({
      host: 'smtp.gmail.com',
      auth: { user: 'school@example.org', pass: 'fake-app-password-aaaa' },
      proxy: `socks5h://pu:${SECRET}@proxy.example:1080`,
    });
    expect(t.name).toBe('smtp://school@example.org@smtp.gmail.com:587?proxy=socks5h://pu@proxy.example:1080');
    expect(configError(() => createSocksTransport({ host: 'smtp.gmail.com', proxy: '' })).part).toBe('proxy');
  });
});

describe('route URLs and objects', () => {
  const registry = new RouteRegistry([...socksRoutes]);
  const proxy = `socks5h://pu:${SECRET}@proxy.example:1080`;

  it('smtp://…?proxy= parses into smtp route data with the proxy; core’s parameters still work', () => {
    const parsed = registry.parse(
      `smtps://u%40example.org:fake-app-password-aaaa@smtp.gmail.com?proxy=${encodeURIComponent(proxy)}&proxyTimeout=3000&pool=false&servername=smtp.gmail.com`,
    ) as RouteConfig;
    expect(parsed).toEqual({
      type: 'smtp',
      host: 'smtp.gmail.com',
      secure: true,
      auth: { user: 'u@example.org', pass: 'fake-app-password-aaaa' },
      pool: false,
      tls: { servername: 'smtp.gmail.com' },
      proxy,
      proxyTimeout: 3000,
    });
    const t = registry.build(parsed, { outbox: createOutbox(), state: new MemoryRouteState(), stateKey: '' });
    expect(t.name).toBe('smtps://u@example.org@smtp.gmail.com:465?proxy=socks5h://pu@proxy.example:1080');
  });

  it('still refuses unknown parameters and bad proxies, without echoing the proxy password', () => {
    expect(configError(() => registry.parse(`smtp://h.example?proxy=${encodeURIComponent(proxy)}&prox=1`)).part).toBe(
      'query.prox',
    );
    const bad = configError(() =>
      registry.parse(`smtp://h.example?proxy=${encodeURIComponent(`socks4://pu:${SECRET}@p`)}`),
    );
    expect(bad.part).toBe('query.proxy');
    expect(configError(() => registry.parse('smtp://h.example?proxy=')).part).toBe('query.proxy');
    expect(configError(() => registry.parse('smtp://h.example?proxyTimeout=5')).part).toBe('query.proxyTimeout');
    expect(
      configError(() => registry.parse(`smtp://h.example?proxy=${encodeURIComponent(proxy)}&proxyTimeout=soon`)).part,
    ).toBe('query.proxyTimeout');
  });

  it('a socks route checks its fields', () => {
    const ctx = {
      outbox: createOutbox(),
      state: new MemoryRouteState(),
      stateKey: '',
      build: () => ({}) as never,
    };
    const build = (config: Record<string, unknown>) => socksRoute.create({ type: 'socks', ...config }, ctx);
    expect(configError(() => build({ route: 'smtp://h.example' })).part).toBe('proxy');
    expect(configError(() => build({ proxy, route: 'https://api.example' })).part).toBe('route');
    expect(configError(() => build({ proxy, route: `smtp://h.example?proxy=${encodeURIComponent(proxy)}` })).part).toBe(
      'route',
    );
    expect(configError(() => build({ proxy, route: 42 })).part).toBe('route');
    expect(configError(() => build({ proxy, route: { type: 'smtp', host: 'h' }, proxyTimeout: -1 })).part).toBe(
      'proxyTimeout',
    );
    expect(configError(() => socksRoute.fromUrl(new URL('socks://x'))).part).toBe('scheme');
    expect(build({ proxy, route: { type: 'smtp', host: 'smtp.example.org' } }).name).toBe(
      'smtp://smtp.example.org:587?proxy=socks5h://pu@proxy.example:1080',
    );
  });

  it('the smtp factory replaces core’s when handed to the registry', () => {
    expect(socksSmtpRoute.type).toBe('smtp');
    expect(new RouteRegistry(socksRoutes).types()).toEqual(['smtp', 'capture', 'socks']);
  });
});
