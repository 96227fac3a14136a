import { RouteConfigError } from '@mailvia/core';
import { describe, expect, it } from 'vitest';
import { redisStores } from '../src/index.js';

const refused = (options: Parameters<typeof redisStores>[0]): RouteConfigError => {
  try {
    redisStores(options);
  } catch (e) {
    return e as RouteConfigError;
  }
  throw new Error('redisStores took the options');
};

describe('redisStores options', () => {
  it('refuses each bad option with a typed error naming it, before any connection, and never shows a password', () => {
    const cases: [Parameters<typeof redisStores>[0], string, RegExp][] = [
      [{ connection: 'not a url' }, 'connection', /not a redis:\/\/ URL/],
      [{ connection: 'http://user:fake-secret@127.0.0.1:6379' }, 'connection', /scheme must be redis: or rediss:/],
      [{ connection: 'redis://:fake-secret@127.0.0.1:6379/first' }, 'connection.db', /is not a number/],
      [{ prefix: 'my app' }, 'prefix', /without spaces/],
      [{ queueName: 'mail:queue' }, 'queueName', /letters, digits/],
      [{ outcomeDelay: -5 }, 'outcomeDelay', /0 or more \(got -5\)/],
      [{ outcomeDelay: Number.NaN }, 'outcomeDelay', /number of ms/],
    ];
    for (const [options, part, problem] of cases) {
      const e = refused(options);
      expect(e).toBeInstanceOf(RouteConfigError);
      expect(e.part).toBe(part);
      expect(e.message).toMatch(problem);
      expect(e.message).not.toContain('fake-secret');
    }
  });
});
