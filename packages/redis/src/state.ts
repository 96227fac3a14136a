import {
  type ConsumeOptions,
  fixedWindow,
  type QuotaConsumption,
  type QuotaLimit,
  type QuotaUsage,
  type QuotaWindow,
  type RestState,
  type RouteStateStore,
} from '@mailvia/core';
import type { Redis } from 'ioredis';
import { script } from './scripts.js';

// KEYS: one counter per window (a string for a fixed window, a sorted set for a rolling one)
// ARGV: now, amount, member; then per window: 'f' or 'r', window ms, limit, expiry (epoch ms, fixed)
// Every window is read first; the units are counted in all of them or in none.
const CONSUME_ALL = `
local now = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
local used = {}
local all = 1
for i = 1, #KEYS do
  local b = 3 + (i - 1) * 4
  if ARGV[b + 1] == 'f' then
    used[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  else
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - tonumber(ARGV[b + 2]))
    used[i] = redis.call('ZCARD', KEYS[i])
  end
  if used[i] + amount > tonumber(ARGV[b + 3]) then all = 0 end
end
local out = {all}
for i = 1, #KEYS do
  local b = 3 + (i - 1) * 4
  local fits = 0
  if used[i] + amount <= tonumber(ARGV[b + 3]) then fits = 1 end
  local oldest = '0'
  if ARGV[b + 1] == 'f' then
    if all == 1 and amount > 0 then
      used[i] = redis.call('INCRBY', KEYS[i], amount)
      redis.call('PEXPIREAT', KEYS[i], ARGV[b + 4])
    end
  else
    if all == 1 and amount > 0 then
      for j = 1, amount do redis.call('ZADD', KEYS[i], now, ARGV[3] .. ':' .. j) end
      used[i] = used[i] + amount
      redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[b + 2]) + 1000)
    end
    local first = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    oldest = first[2] or ARGV[1]
  end
  table.insert(out, fits)
  table.insert(out, used[i])
  table.insert(out, oldest)
end
return out`;

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
  private readonly consumeScript = script(CONSUME_ALL, 1);
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
    return (await this.consumeAll(key, [{ window, limit }], options)).windows[0]!;
  }

  async consumeAll(
    key: string,
    limits: readonly QuotaLimit[],
    options: ConsumeOptions = {},
  ): Promise<QuotaConsumption> {
    if (limits.length === 0) return { allowed: true, windows: [] };
    const now = options.now ?? Date.now();
    const amount = options.amount ?? 1;
    const keys: string[] = [];
    const args: (string | number)[] = [
      now,
      amount,
      `${now}:${process.pid}:${this.seq++}:${Math.random().toString(36).slice(2, 8)}`,
    ];
    const ends: number[] = [];
    for (const { window, limit } of limits) {
      const base = `${this.prefix}:quota:${key}|${window.type}:${window.ms}`;
      if (window.type === 'fixed') {
        const { start, end } = fixedWindow(window, now);
        keys.push(`${base}:${start}`);
        args.push('f', window.ms, limit, end + 60_000);
        ends.push(end);
      } else {
        keys.push(base);
        args.push('r', window.ms, limit, 0);
        ends.push(0);
      }
    }
    const out = (await this.consumeScript(this.redis, keys, args)) as (number | string)[];
    return {
      allowed: Number(out[0]) === 1,
      windows: limits.map(({ window, limit }, i) => ({
        allowed: Number(out[1 + i * 3]) === 1,
        used: Number(out[2 + i * 3]),
        limit,
        resetAt: window.type === 'fixed' ? ends[i]! : Number(out[3 + i * 3]) + window.ms,
      })),
    };
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
