import { describe, expect, it } from 'vitest';
import { createOutbox, MemoryRouteState, RouteConfigError, type RouteFactory, RouteRegistry } from '../src/index.js';

const ctx = { outbox: createOutbox(), state: new MemoryRouteState(), stateKey: '' };
const reg = new RouteRegistry();

function configError(fn: () => unknown): RouteConfigError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(RouteConfigError);
    return e as RouteConfigError;
  }
  throw new Error('expected a RouteConfigError');
}

describe('route URLs and data', () => {
  it('parses smtp URLs with credentials, port and options', () => {
    expect(reg.parse('smtp://school%40example.org:p%40ss@smtp.example.org:587?maxConnections=2')).toEqual({
      type: 'smtp',
      host: 'smtp.example.org',
      port: 587,
      secure: false,
      auth: { user: 'school@example.org', pass: 'p@ss' },
      maxConnections: 2,
    });
    expect(reg.parse('smtps://smtp.example.org')).toMatchObject({ secure: true, host: 'smtp.example.org' });
  });

  it('builds failover(...) and roundrobin(...) chains, nested, and arrays as failover', () => {
    const t = reg.build('failover(smtp://127.0.0.1:2525 roundrobin(smtp://127.0.0.1:2526 capture://) capture://)', ctx);
    expect(t.name).toBe('failover(smtp://127.0.0.1:2525 roundrobin(smtp://127.0.0.1:2526 capture) capture)');
    expect(reg.build(['smtp://127.0.0.1:25', { type: 'capture' }], ctx).name).toBe(
      'failover(smtp://127.0.0.1:25 capture)',
    );
  });

  it('names the bad part of a URL and never echoes the password', () => {
    const secret = 'Sup3r-Secret-Pass';
    for (const [url, part] of [
      [`smtp://u:${secret}@host:notaport`, 'port'],
      [`smtpx://u:${secret}@host`, 'scheme'],
      [`smtp://u:${secret}@host?typo=1`, 'query.typo'],
      [`smtp://u:${secret}@host?pool=maybe`, 'query.pool'],
      [`failover(smtp://u:${secret}@host`, 'parentheses'],
      [`u:${secret}@host`, 'scheme'],
    ] as const) {
      const e = configError(() => reg.build(url, ctx));
      expect(e.part).toBe(part);
      expect(e.message).not.toContain(secret);
    }
  });

  it('refuses unknown route types naming the known ones', () => {
    expect(configError(() => reg.build({ type: 'pigeon' }, ctx)).message).toMatch(/pigeon.*smtp, capture/);
  });

  it('takes route factories from packages, and a later factory replaces an earlier one', () => {
    const fake: RouteFactory = {
      type: 'fake',
      schemes: ['fake'],
      fromUrl: (u) => ({ type: 'fake', host: u.hostname }),
      create: (c) => ({
        specificationVersion: 'v1',
        name: `fake:${String(c.host)}`,
        send: () => Promise.reject(new Error('not used')),
      }),
    };
    expect(new RouteRegistry([fake]).build('fake://abc', ctx).name).toBe('fake:abc');
  });
});

describe('maskUrl', () => {
  it('keeps what identifies a route and hides what would let someone use it', async () => {
    const { maskUrl } = await import('../src/index.js');
    expect(maskUrl('smtp://user%40example.org:s3cret@smtp.example.org:587')).toBe(
      'smtp://user%40example.org:****@smtp.example.org:587',
    );
    expect(
      maskUrl('gmail+api://office%40school.example@default?clientId=abc&clientSecret=s3cret&refreshToken=r3fresh'),
    ).toBe('gmail+api://office%40school.example@default?clientId=abc&clientSecret=****&refreshToken=****');
    expect(maskUrl('sendgrid+api://SG.fake-key-value@default')).toBe('sendgrid+api://****@default');
    expect(maskUrl('smtp://h:abc?proxy=socks5h%3A%2F%2Fu%3AS3CRET%40p')).not.toContain('S3CRET');
    expect(maskUrl('failover(smtp://a:p1@h1 smtp://b:p2@h2?proxy=socks5h://u:p3@proxy:1080)')).toBe(
      'failover(smtp://a:****@h1 smtp://b:****@h2?proxy=socks5h://u:****@proxy:1080)',
    );
  });
});
