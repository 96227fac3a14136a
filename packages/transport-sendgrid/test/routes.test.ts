import { createOutbox, MemoryRouteState, RouteConfigError, RouteRegistry } from '@mailvia/core';
import { describe, expect, it } from 'vitest';
import { sendgridApi, sendgridApiRoute, sendgridSmtpRoute } from '../src/index.js';

const KEY = 'SG.fake-url-key-ffffffffffffffffffff.gggggggggggggggggggggggggggggggggggggggggg';
const registry = new RouteRegistry([sendgridApiRoute, sendgridSmtpRoute]);
const context = { outbox: createOutbox(), state: new MemoryRouteState(), stateKey: '' };

const errorOf = (f: () => unknown): RouteConfigError => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(RouteConfigError);
    expect((e as Error).message).not.toContain(KEY);
    return e as RouteConfigError;
  }
  throw new Error('expected a RouteConfigError');
};

describe('sendgrid+api URLs', () => {
  it('reads the key and the region; the route name shows a fingerprint, not the key', () => {
    expect(registry.parse(`sendgrid+api://${KEY}@default`)).toEqual({ type: 'sendgrid+api', apiKey: KEY });
    expect(registry.parse(`sendgrid+api://${KEY}@eu?timeout=5000`)).toEqual({
      type: 'sendgrid+api',
      apiKey: KEY,
      region: 'eu',
      timeout: 5000,
    });
    const global = registry.build(`sendgrid+api://${KEY}@default`, context);
    const eu = registry.build(`sendgrid+api://${KEY}@eu`, context);
    expect(global.name).toMatch(/^sendgrid\+api:\/\/api\.sendgrid\.com#key-[0-9a-f]{8}$/);
    expect(eu.name).toMatch(/^sendgrid\+api:\/\/api\.eu\.sendgrid\.com#key-[0-9a-f]{8}$/);
    expect(global.name).not.toContain(KEY);
    // two keys, two names: a resting key does not rest the other
    expect(registry.build('sendgrid+api://SG.other-key-hhhhhhhhhhhh@default', context).name).not.toBe(global.name);
  });

  it('takes another HTTPS host, or an endpoint (http: only to loopback)', () => {
    expect(registry.parse(`sendgrid+api://${KEY}@gateway.example.org:8443`)).toEqual({
      type: 'sendgrid+api',
      apiKey: KEY,
      baseUrl: 'https://gateway.example.org:8443',
    });
    expect(registry.parse(`sendgrid+api://${KEY}@default?endpoint=http://127.0.0.1:4010`)).toMatchObject({
      baseUrl: 'http://127.0.0.1:4010',
    });
    const e = errorOf(() => registry.parse(`sendgrid+api://${KEY}@default?endpoint=http://gateway.example.org`));
    expect(e.part).toBe('query.endpoint');
    expect(e.message).toMatch(/clear text/);
  });

  it('refuses unknown parameters, a missing key, and bad data, without showing the key', () => {
    expect(errorOf(() => registry.parse(`sendgrid+api://${KEY}@default?region=eu`)).part).toBe('query.region');
    expect(errorOf(() => registry.parse(`sendgrid+api://${KEY}@default?timeout=soon`)).part).toBe('query.timeout');
    expect(errorOf(() => registry.parse('sendgrid+api://default')).part).toBe('apiKey');
    expect(errorOf(() => registry.build({ type: 'sendgrid+api', apiKey: KEY, region: 'us' }, context)).part).toBe(
      'region',
    );
    expect(errorOf(() => registry.build({ type: 'sendgrid+api' }, context)).part).toBe('apiKey');
    expect(errorOf(() => sendgridApi({ apiKey: KEY, baseUrl: 'http://api.sendgrid.com' })).part).toBe('baseUrl');
    expect(errorOf(() => sendgridApi({ apiKey: KEY, headers: { Authorization: 'Bearer x' } })).part).toBe(
      'headers.Authorization',
    );
  });
});
