import { AsyncLocalStorage } from 'node:async_hooks';
import type { Agent, ClientRequest } from 'node:http';

/**
 * How far the HTTP request of one send got. Filled in by the agent returned by
 * {@link trackingAgent} while the send runs inside {@link withProgress}.
 */
export interface RequestProgress {
  /** A request was handed to the agent. */
  started: boolean;
  /** The request (head and body) was fully written to the socket: the provider may act on it. */
  sent: boolean;
}

const current = new AsyncLocalStorage<RequestProgress>();
const WRAPPED = Symbol.for('mailvia.trackingAgent');

/** Runs `fn` with a fresh {@link RequestProgress} that requests made inside it report to. */
export function withProgress<T>(fn: (progress: RequestProgress) => Promise<T>): Promise<T> {
  const progress: RequestProgress = { started: false, sent: false };
  return current.run(progress, () => fn(progress));
}

/**
 * Wraps an http(s) agent so that every request made through it inside {@link withProgress}
 * reports when it was completely written (`'finish'`). The agent itself is not changed; with
 * `owned: false` the wrapper's `destroy()` leaves the caller's agent alone.
 */
export function trackingAgent<A extends Agent>(agent: A, owned: boolean): A {
  if ((agent as unknown as Record<symbol, unknown>)[WRAPPED]) return agent;
  const addRequest = (req: ClientRequest, options: unknown) => {
    const progress = current.getStore();
    if (progress) {
      progress.started = true;
      req.once('finish', () => {
        progress.sent = true;
      });
    }
    return (agent as unknown as { addRequest(r: ClientRequest, o: unknown): void }).addRequest(req, options);
  };
  return new Proxy(agent, {
    get(target, prop) {
      if (prop === WRAPPED) return true;
      if (prop === 'addRequest') return addRequest;
      if (prop === 'destroy' && !owned) return () => {};
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}
