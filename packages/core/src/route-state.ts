import type { FailureKind } from './errors.js';

/** Why and until when a route rests. */
export interface RestState {
  /** Epoch ms until which the route is skipped without a network call. */
  until: number;
  kind: FailureKind;
  /** The failure, in words, for health pages. */
  reason: string;
  /** Epoch ms until which a probe holds the route (only one send probes a route after its rest). */
  probeUntil?: number;
}

type MaybePromise<T> = T | Promise<T>;

/**
 * A counting window of a quota: `fixed` windows start at multiples of `ms` since the epoch (a
 * day starts at 00:00 UTC), `rolling` ones count the sends of the last `ms` at every moment.
 */
export interface QuotaWindow {
  type: 'fixed' | 'rolling';
  ms: number;
}

/** The answer of {@link RouteStateStore.consume}. */
export interface QuotaUsage {
  /** True when the units were counted (the send may go); false when it would exceed the limit. */
  allowed: boolean;
  /** Units counted in the window now (including these, when allowed). */
  used: number;
  limit: number;
  /** Epoch ms when a unit frees up (fixed: the window's end; rolling: the oldest unit's expiry). */
  resetAt: number;
}

/** One window of a quota and its limit, for {@link RouteStateStore.consumeAll}. */
export interface QuotaLimit {
  window: QuotaWindow;
  limit: number;
}

/** The answer of {@link RouteStateStore.consumeAll}. */
export interface QuotaConsumption {
  /** True when the units were counted in every window; false when counted in none. */
  allowed: boolean;
  /**
   * Each window, in the order given: `allowed` says whether that window alone had room; `used`
   * includes the units only when they were counted (everywhere).
   */
  windows: QuotaUsage[];
}

/** Options of {@link RouteStateStore.consume} and {@link RouteStateStore.consumeAll}. */
export interface ConsumeOptions {
  /** Epoch ms. @default Date.now() */
  now?: number;
  /** Units to count; 0 reads the usage without counting. @default 1 */
  amount?: number;
}

/**
 * Where composites keep which routes rest. In memory by default; a shared implementation (Redis)
 * lets several app instances skip a route one of them found down.
 */
export interface RouteStateStore {
  get(key: string): MaybePromise<RestState | undefined>;
  rest(key: string, state: RestState): MaybePromise<void>;
  clear(key: string): MaybePromise<void>;
  /** Takes the one probe slot of a route whose rest has ended; false when another send holds it. */
  claimProbe(key: string, now: number, leaseMs: number): MaybePromise<boolean>;
  /**
   * Counts `amount` units against `limit` in the window, atomically (instances sharing the store
   * never exceed the limit together). Counts nothing when the limit would be exceeded.
   */
  consume(key: string, window: QuotaWindow, limit: number, options?: ConsumeOptions): MaybePromise<QuotaUsage>;
  /**
   * Counts `amount` units in every window of a quota, or in none: one atomic step, so a used-up
   * later window never costs a unit of an earlier one, even with concurrent sends (a Lua script in
   * Redis, one transaction in SQLite). The counters are {@link consume}'s (same key and window).
   */
  consumeAll(key: string, limits: readonly QuotaLimit[], options?: ConsumeOptions): MaybePromise<QuotaConsumption>;
  /** Every resting route whose key starts with `prefix`, for health pages. */
  entries?(prefix?: string): MaybePromise<[string, RestState][]>;
}

/** Start and end of the fixed window holding `now`. */
export function fixedWindow(window: QuotaWindow, now: number): { start: number; end: number } {
  const start = Math.floor(now / window.ms) * window.ms;
  return { start, end: start + window.ms };
}

/** The in-process {@link RouteStateStore}. */
export class MemoryRouteState implements RouteStateStore {
  private readonly states = new Map<string, RestState>();
  private readonly fixed = new Map<string, { start: number; used: number }>();
  private readonly rolling = new Map<string, number[]>();
  get(key: string): RestState | undefined {
    return this.states.get(key);
  }
  rest(key: string, state: RestState): void {
    this.states.set(key, state);
  }
  clear(key: string): void {
    this.states.delete(key);
  }
  claimProbe(key: string, now: number, leaseMs: number): boolean {
    const s = this.states.get(key);
    if (!s) return true;
    if (s.probeUntil !== undefined && s.probeUntil > now) return false;
    s.probeUntil = now + leaseMs;
    return true;
  }
  consume(key: string, window: QuotaWindow, limit: number, options: ConsumeOptions = {}): QuotaUsage {
    return this.consumeAll(key, [{ window, limit }], options).windows[0]!;
  }
  consumeAll(key: string, limits: readonly QuotaLimit[], options: ConsumeOptions = {}): QuotaConsumption {
    const now = options.now ?? Date.now();
    const amount = options.amount ?? 1;
    const seen = limits.map(({ window, limit }) => {
      const id = `${key}|${window.type}:${window.ms}`;
      if (window.type === 'fixed') {
        const { start, end } = fixedWindow(window, now);
        let w = this.fixed.get(id);
        if (!w || w.start !== start) {
          w = { start, used: 0 };
          this.fixed.set(id, w);
        }
        const slot = w;
        return {
          limit,
          fits: slot.used + amount <= limit,
          add: () => {
            slot.used += amount;
          },
          usage: () => ({ used: slot.used, resetAt: end }),
        };
      }
      const since = now - window.ms;
      const stamps = (this.rolling.get(id) ?? []).filter((t) => t > since);
      this.rolling.set(id, stamps);
      return {
        limit,
        fits: stamps.length + amount <= limit,
        add: () => {
          for (let i = 0; i < amount; i++) stamps.push(now);
        },
        usage: () => ({ used: stamps.length, resetAt: (stamps[0] ?? now) + window.ms }),
      };
    });
    const allowed = seen.every((w) => w.fits);
    if (allowed && amount > 0) for (const w of seen) w.add();
    return { allowed, windows: seen.map((w) => ({ allowed: w.fits, limit: w.limit, ...w.usage() })) };
  }
  /** Every resting route (whose key starts with `prefix`), for health pages. */
  entries(prefix = ''): [string, RestState][] {
    return [...this.states.entries()].filter(([k]) => k.startsWith(prefix));
  }
}
