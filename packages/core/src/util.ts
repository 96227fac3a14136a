import { isIP } from 'node:net';

/** True for `localhost`, 127.0.0.0/8 and ::1: the only hosts that may see AUTH without TLS. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || h === '0:0:0:0:0:0:0:1';
  return false;
}

/** One signal that aborts when any of the given ones does, or after `timeoutMs`. */
export function combineSignals(signals: (AbortSignal | undefined)[], timeoutMs?: number): AbortSignal | undefined {
  const list = signals.filter((s): s is AbortSignal => s !== undefined);
  if (timeoutMs !== undefined && timeoutMs > 0 && Number.isFinite(timeoutMs)) list.push(AbortSignal.timeout(timeoutMs));
  if (list.length === 0) return undefined;
  if (list.length === 1) return list[0];
  return AbortSignal.any(list);
}

/**
 * A send's deadline: a signal that aborts when `signal` does, or after `timeoutMs` (with a
 * `TimeoutError`, as `AbortSignal.timeout` gives). `clear()` stops the timer once the send is
 * over, so no timer outlives it (`AbortSignal.timeout` keeps one per send for the whole delay).
 */
export function deadline(
  signal: AbortSignal | undefined,
  timeoutMs: number | undefined,
): { signal: AbortSignal | undefined; clear(): void } {
  if (timeoutMs === undefined || !(timeoutMs > 0) || !Number.isFinite(timeoutMs)) return { signal, clear() {} };
  const controller = new AbortController();
  const timer = setTimeout(
    () => controller.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError')),
    timeoutMs,
  );
  timer.unref?.();
  return {
    signal: signal ? AbortSignal.any([signal, controller.signal]) : controller.signal,
    clear: () => clearTimeout(timer),
  };
}

/** The reason an aborted signal carries, as text. */
export function abortReason(signal: AbortSignal): string {
  const r: unknown = signal.reason;
  if (r instanceof Error) return r.name === 'TimeoutError' ? 'the send deadline passed' : r.message;
  return 'the send was aborted';
}
