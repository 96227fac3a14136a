import { MailError, RouteConfigError } from './errors.js';
import type { PreparedMessage } from './message.js';
import type { QuotaWindow, RouteStateStore } from './route-state.js';
import type { Receipt, SendOptions, Transport } from './spec.js';

/**
 * The sending quota of a route, as route data carries it:
 * `{ type: 'smtp', host: 'smtp.gmail.com', …, quota: { rolling24h: 500 } }`, or in a URL:
 * `smtp://…@smtp.gmail.com:587?quota=500/24h` (`500/day`, `100/h`, `10/min`, `5/s`, comma-separated).
 *
 * Counted per organisation and route in the mailer's route state store (shared across
 * instances with Redis), one unit per attempt, before the network call. When a window is used
 * up the route fails `limited` without a network call and rests until the window frees a unit.
 */
export interface RouteQuota {
  /** Sends per second (a fixed one-second window). */
  perSecond?: number;
  /** Sends per minute (fixed window). */
  perMinute?: number;
  /** Sends per hour (fixed window). */
  perHour?: number;
  /** Sends per calendar day, reset at 00:00 UTC (SendGrid's free plan). */
  perDay?: number;
  /** Sends in any 24 hours (Gmail's 500, SES's 24-hour quota). */
  rolling24h?: number;
  /** Share of a window's limit at which a `quota-warning` event fires (once per window). @default 0.8 */
  warnAt?: number;
}

/** A quota crossed its warning threshold, or its last unit was used. */
export interface QuotaEvent {
  type: 'warning' | 'exhausted';
  /** The route's name. */
  route: string;
  /** Which limit: `perSecond`, `perMinute`, `perHour`, `perDay` or `rolling24h`. */
  window: keyof Omit<RouteQuota, 'warnAt'>;
  used: number;
  limit: number;
  /** Epoch ms when a unit frees up. */
  resetAt: number;
}

const WINDOWS: { field: QuotaEvent['window']; window: QuotaWindow; quota: boolean; unit: string }[] = [
  { field: 'perSecond', window: { type: 'fixed', ms: 1000 }, quota: false, unit: 'second' },
  { field: 'perMinute', window: { type: 'fixed', ms: 60_000 }, quota: false, unit: 'minute' },
  { field: 'perHour', window: { type: 'fixed', ms: 3_600_000 }, quota: true, unit: 'hour' },
  { field: 'perDay', window: { type: 'fixed', ms: 86_400_000 }, quota: true, unit: 'day (UTC)' },
  { field: 'rolling24h', window: { type: 'rolling', ms: 86_400_000 }, quota: true, unit: '24 hours' },
];

const UNITS: Record<string, QuotaEvent['window']> = {
  s: 'perSecond',
  sec: 'perSecond',
  second: 'perSecond',
  min: 'perMinute',
  minute: 'perMinute',
  h: 'perHour',
  hour: 'perHour',
  day: 'perDay',
  d: 'perDay',
  '24h': 'rolling24h',
};

/** Parses `500/day,10/s` (the `quota` URL parameter). */
export function parseQuota(text: string, where?: string): RouteQuota {
  const out: RouteQuota = {};
  for (const part of text.split(',')) {
    const m = /^\s*(\d+)\s*\/\s*([a-z0-9]+)\s*$/i.exec(part);
    const field = m ? UNITS[m[2]!.toLowerCase()] : undefined;
    if (!m || !field)
      throw new RouteConfigError(
        'query.quota',
        `${JSON.stringify(part)} is not a quota (e.g. 500/day, 500/24h, 100/h, 10/min, 5/s)`,
        where,
      );
    out[field] = Number(m[1]);
  }
  return out;
}

/** Checks route data's `quota` field. */
export function checkQuota(value: unknown, where?: string): RouteQuota {
  if (typeof value === 'string') return parseQuota(value, where);
  if (typeof value !== 'object' || value === null) throw new RouteConfigError('quota', 'must be an object', where);
  const q = value as Record<string, unknown>;
  for (const [k, v] of Object.entries(q)) {
    if (k === 'warnAt') {
      if (typeof v !== 'number' || !(v > 0 && v <= 1))
        throw new RouteConfigError('quota.warnAt', 'must be in (0, 1]', where);
    } else if (!WINDOWS.some((w) => w.field === k)) {
      throw new RouteConfigError(
        `quota.${k}`,
        `unknown limit (known: ${WINDOWS.map((w) => w.field).join(', ')}, warnAt)`,
        where,
      );
    } else if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
      throw new RouteConfigError(`quota.${k}`, 'must be a whole number', where);
    }
  }
  return q as RouteQuota;
}

/** One window of a route's quota, as it stands now (read from the route state store). */
export interface QuotaReading {
  /** Which limit: `perSecond`, `perMinute`, `perHour`, `perDay` or `rolling24h`. */
  window: QuotaEvent['window'];
  limit: number;
  /** Units counted in the window now. */
  used: number;
  /** `limit - used` (0 when used up). */
  left: number;
  /** Epoch ms when a unit frees up (fixed windows: the window's end; rolling: the oldest unit's expiry). */
  resetAt: number;
  /** True when no unit is left: the route is skipped (fails `limited` without a network call) until `resetAt`. */
  exhausted: boolean;
}

const QUOTA_READER = Symbol.for('mailvia.quota');

/**
 * Reads the quota windows of a route wrapped by {@link withQuota}, without counting anything;
 * undefined for a route without a quota.
 */
export async function readQuota(route: Transport, now = Date.now()): Promise<QuotaReading[] | undefined> {
  const reader = (route as unknown as Record<symbol, unknown>)[QUOTA_READER];
  return typeof reader === 'function' ? (reader as (now: number) => Promise<QuotaReading[]>)(now) : undefined;
}

/**
 * Wraps a route so that its quota is counted in `state` before each attempt. A used-up window
 * raises `limited` (with `quota` for hours and days, and `retryAfter` until a unit frees up)
 * without a network call; the composite then rests the route until then.
 */
export function withQuota(route: Transport, quota: RouteQuota, state: RouteStateStore, stateKey: string): Transport {
  const windows = WINDOWS.filter((w) => quota[w.field] !== undefined);
  const warnAt = quota.warnAt ?? 0.8;
  const limits = windows.map((w) => ({ window: w.window, limit: quota[w.field]! }));
  const key = `quota:${stateKey}${route.name}`;
  const read = async (now: number): Promise<QuotaReading[]> => {
    const usage = await state.consumeAll(key, limits, { amount: 0, now });
    return windows.map((w, i) => {
      const { used, limit, resetAt } = usage.windows[i]!;
      const left = Math.max(0, limit - used);
      return { window: w.field, limit, used, left, resetAt, exhausted: left === 0 };
    });
  };
  const wrapped: Transport = {
    specificationVersion: 'v1',
    name: route.name,
    async send(message: PreparedMessage, options: SendOptions = {}): Promise<Receipt> {
      // every window in one atomic step: a used-up window never costs a unit of another one
      const usage = await state.consumeAll(key, limits);
      if (!usage.allowed) {
        // the used-up window that frees up last: no send goes before then
        let i = usage.windows.findIndex((u) => !u.allowed);
        usage.windows.forEach((u, j) => {
          if (!u.allowed && u.resetAt > usage.windows[i]!.resetAt) i = j;
        });
        const w = windows[i]!;
        const { used, limit, resetAt } = usage.windows[i]!;
        throw new MailError(
          `${route.name}: its quota of ${limit} per ${w.unit} is used up (${used} counted); a send is possible again at ${new Date(resetAt).toISOString()}`,
          {
            kind: 'limited',
            phase: 'connect',
            route: route.name,
            code: 'EQUOTA',
            quota: w.quota,
            retryAfter: Math.max(0, resetAt - Date.now()),
            rule: 'mailvia.quota',
          },
        );
      }
      for (const [i, w] of windows.entries()) {
        const { used, limit, resetAt } = usage.windows[i]!;
        const event = { route: route.name, window: w.field, used, limit, resetAt };
        const threshold = Math.max(1, Math.ceil(limit * warnAt));
        if (used >= threshold && used - 1 < threshold && used < limit)
          options.observer?.quota?.({ type: 'warning', ...event });
        if (used === limit) {
          if (threshold >= limit) options.observer?.quota?.({ type: 'warning', ...event });
          options.observer?.quota?.({ type: 'exhausted', ...event });
        }
      }
      return route.send(message, options);
    },
  };
  if (route.verify) wrapped.verify = (o) => route.verify!(o);
  if (route.close) wrapped.close = () => route.close!();
  Object.defineProperty(wrapped, QUOTA_READER, { value: read, enumerable: false });
  return wrapped;
}
