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
 * Where composites keep which routes rest. In memory by default; a shared implementation (Redis)
 * lets several app instances skip a route one of them found down.
 */
export interface RouteStateStore {
  get(key: string): MaybePromise<RestState | undefined>;
  rest(key: string, state: RestState): MaybePromise<void>;
  clear(key: string): MaybePromise<void>;
  /** Takes the one probe slot of a route whose rest has ended; false when another send holds it. */
  claimProbe(key: string, now: number, leaseMs: number): MaybePromise<boolean>;
}

/** The in-process {@link RouteStateStore}. */
export class MemoryRouteState implements RouteStateStore {
  private readonly states = new Map<string, RestState>();
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
  /** Every resting route, for health pages. */
  entries(): [string, RestState][] {
    return [...this.states.entries()];
  }
}
