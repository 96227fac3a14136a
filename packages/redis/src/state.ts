import {
  type ConsumeOptions,
  fixedWindow,
  type QuotaUsage,
  type QuotaWindow,
  type RestState,
  type RouteStateStore,
} from '@mailvia/core';
import type { Redis } from 'ioredis';
import { script } from './scripts.js';

const CONSUME_FIXED = `
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if used + amount <= limit then
  if amount > 0 then
    used = redis.call('INCRBY', KEYS[1], amount)
    redis.call('PEXPIREAT', KEYS[1], ARGV[3])
  end
  return {1, used}
end
return {0, used}`;

const CONSUME_ROLLING = `
local now = tonumber(ARGV[1])
local win = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - win)
local used = redis.call('ZCARD', KEYS[1])
local allowed = 0
if used + amount <= limit then
  for i = 1, amount do redis.call('ZADD', KEYS[1], now, ARGV[5] .. ':' .. i) end
  used = used + amount
  allowed = 1
  redis.call('PEXPIRE', KEYS[1], win + 1000)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local oldest = ARGV[1]
if first[2] then oldest = first[2] end
return {allowed, used, oldest}`;

const CLAIM_PROBE = `
local v = redis.call('GET', KEYS[1])
if not v then return 1 end
local s = cjson.decode(v)
local now = tonumber(ARGV[1])
if s.probeUntil and tonumber(s.probeUntil) > now then return 0 end
s.probeUntil = now + tonumber(ARGV[2])
redis.call('SET', KEYS[1], cjson.encode(s), 'KEEPTTL')
return 1`;

/** How long a rest record outlives its `until` (so the probe after the rest is still single). */
const REST_TAIL = 7 * 86_400_000;

/**
 * Resting routes and quota counters in Redis, shared by every instance: a route one instance
 * found down is skipped by the others without a connection; quota counts are Lua-atomic, so
 * instances together never exceed a limit.
 */
export class RedisRouteState implements RouteStateStore {
  private readonly consumeFixed = script(CONSUME_FIXED, 1);
  private readonly consumeRolling = script(CONSUME_ROLLING, 1);
  private readonly claim = script(CLAIM_PROBE, 1);
  private seq = 0;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private restKey(key: string): string {
    return `${this.prefix}:rest:${key}`;
  }

  async get(key: string): Promise<RestState | undefined> {
    const v = await this.redis.get(this.restKey(key));
    return v ? (JSON.parse(v) as RestState) : undefined;
  }

  async rest(key: string, state: RestState): Promise<void> {
    const ttl = Math.max(1000, state.until - Date.now() + REST_TAIL);
    await this.redis.set(this.restKey(key), JSON.stringify(state), 'PX', ttl);
  }

  async clear(key: string): Promise<void> {
    await this.redis.del(this.restKey(key));
  }

  async claimProbe(key: string, now: number, leaseMs: number): Promise<boolean> {
    return Number(await this.claim(this.redis, [this.restKey(key)], [now, leaseMs])) === 1;
  }

  async consume(key: string, window: QuotaWindow, limit: number, options: ConsumeOptions = {}): Promise<QuotaUsage> {
    const now = options.now ?? Date.now();
    const amount = options.amount ?? 1;
    const base = `${this.prefix}:quota:${key}|${window.type}:${window.ms}`;
    if (window.type === 'fixed') {
      const { start, end } = fixedWindow(window, now);
      const [allowed, used] = (await this.consumeFixed(
        this.redis,
        [`${base}:${start}`],
        [amount, limit, end + 60_000],
      )) as [number, number];
      return { allowed: allowed === 1, used: Number(used), limit, resetAt: end };
    }
    const member = `${now}:${process.pid}:${this.seq++}:${Math.random().toString(36).slice(2, 8)}`;
    const [allowed, used, oldest] = (await this.consumeRolling(
      this.redis,
      [base],
      [now, window.ms, amount, limit, member],
    )) as [number, number, string];
    return { allowed: allowed === 1, used: Number(used), limit, resetAt: Number(oldest) + window.ms };
  }

  async entries(prefix = ''): Promise<[string, RestState][]> {
    const out: [string, RestState][] = [];
    const head = this.restKey('');
    const pattern = `${head}${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`;
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', pattern, 'COUNT', 200);
      cursor = next;
      if (keys.length) {
        const values = await this.redis.mget(...keys);
        keys.forEach((k, i) => {
          const v = values[i];
          if (v) out.push([k.slice(head.length), JSON.parse(v) as RestState]);
        });
      }
    } while (cursor !== '0');
    return out;
  }
}
