import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import {
  createServer as createHttpServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createRequire } from 'node:module';
import { type AddressInfo, createServer as createTcpServer, type Socket } from 'node:net';
import { dirname, resolve } from 'node:path';
import { freePort } from './peers.js';

// Peers for the tests of HTTP API routes: a contract server (Prism), a loopback HTTP server the
// test answers for, a recording and failure-injecting proxy in front of a real peer, and a port
// that cuts every connection. node: modules only; Prism comes from the calling package.

// --- Prism

/** A running Prism mock server serving one contract file. */
export interface Prism {
  url: string;
  port: number;
  pid: number;
  /** What Prism printed (the end of it), for a failing test's message. */
  log(): string;
  close(): Promise<void>;
}

/** Where {@link startPrism} finds Prism: the CLI's script, or a place to resolve `@stoplight/prism-cli` from. */
export type PrismLocation =
  | {
      /** The Prism CLI script (`…/@stoplight/prism-cli/dist/index.js`). */
      bin: string;
    }
  | {
      /**
       * A file or directory of the package that has `@stoplight/prism-cli` as a devDependency,
       * e.g. the test's `import.meta.url`.
       */
      resolveFrom: string | URL;
    };

/** Options of {@link startPrism}. */
export type PrismOptions = PrismLocation & {
  /** Give up when Prism does not listen by then (ms). @default 60_000 */
  timeoutMs?: number;
  /** More arguments for `prism mock` (e.g. `['--errors']`). */
  args?: readonly string[];
};

/** The Prism CLI script, resolved from the calling package (core does not depend on Prism). */
export function prismBin(location: PrismLocation): string {
  if ('bin' in location) return location.bin;
  const from = location.resolveFrom instanceof URL ? location.resolveFrom.href : location.resolveFrom;
  // createRequire wants a file: a directory is given a name inside it
  const base = /^file:|\.[cm]?[jt]s$/.test(from) ? from : resolve(from, 'noop.js');
  let pkg: string;
  try {
    pkg = createRequire(base).resolve('@stoplight/prism-cli/package.json');
  } catch (err) {
    throw new Error(
      `Prism (@stoplight/prism-cli) is not installed for ${from}: add it to the package's devDependencies`,
      { cause: err },
    );
  }
  const { bin } = JSON.parse(readFileSync(pkg, 'utf8')) as { bin?: string | Record<string, string> };
  const script = typeof bin === 'string' ? bin : (bin?.prism ?? 'dist/index.js');
  return resolve(dirname(pkg), script);
}

/**
 * Starts Prism (`prism mock`) on a free loopback port serving the contract `spec`, run by this
 * process's Node (`process.execPath`, the workspace's Node 24, not the one on PATH). Resolves
 * once it listens. Throws when Prism is missing or does not start: a missing peer fails the suite.
 *
 * @example
 * ```ts
 * const prism = await startPrism('/work/shared/contracts/sendgrid/openapi.yaml', { resolveFrom: import.meta.url });
 * ```
 */
export async function startPrism(spec: string, options: PrismOptions): Promise<Prism> {
  const bin = prismBin(options);
  const timeoutMs = options.timeoutMs ?? 60_000;
  const port = await freePort();
  const child: ChildProcess = spawn(
    process.execPath,
    [bin, 'mock', '-h', '127.0.0.1', '-p', String(port), ...(options.args ?? []), spec],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  const collect = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-20_000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  await new Promise<void>((resolveStart, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`Prism did not start within ${timeoutMs} ms:\n${output.slice(-2000)}`));
    }, timeoutMs);
    const onData = () => {
      if (/Prism is listening/.test(output)) {
        clearTimeout(timer);
        child.stdout?.off('data', onData);
        child.off('exit', onExit);
        resolveStart();
      }
    };
    const onExit = (code: number | null) => {
      clearTimeout(timer);
      reject(new Error(`Prism exited (${code}) before listening:\n${output.slice(-2000)}`));
    };
    child.stdout?.on('data', onData);
    child.once('exit', onExit);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error('Prism has no pid');
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    pid,
    log: () => output,
    close: () =>
      new Promise<void>((done) => {
        if (child.exitCode !== null || child.signalCode !== null) return done();
        child.once('exit', () => done());
        process.kill(pid, 'SIGTERM');
      }),
  };
}

// --- shared by the servers below

/** Listens on a free loopback port and keeps the sockets, so `close()` does not wait for keep-alive clients. */
async function listen(server: Server | ReturnType<typeof createTcpServer>): Promise<{
  port: number;
  close(): Promise<void>;
}> {
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

function readBody(req: IncomingMessage, done: (body: Buffer) => void): void {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => done(Buffer.concat(chunks)));
}

// --- a loopback HTTP server the test answers for

/** One request a loopback HTTP peer received, body read in full. */
export interface HttpExchange {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A loopback HTTP server for failure injection: what it does with each request is the test's. */
export interface HttpPeer {
  url: string;
  port: number;
  requests: HttpExchange[];
  close(): Promise<void>;
}

/**
 * Starts a `node:http` server on 127.0.0.1 that reads each request's whole body, records it, then
 * lets `answer` respond (with {@link reply}), destroy the socket (`req.socket.destroy()`: the
 * request was sent and no answer came), or say nothing.
 */
export async function startHttpPeer(
  answer: (exchange: HttpExchange, res: ServerResponse, req: IncomingMessage) => void,
): Promise<HttpPeer> {
  const requests: HttpExchange[] = [];
  const server = createHttpServer((req, res) => {
    readBody(req, (body) => {
      const exchange = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body };
      requests.push(exchange);
      answer(exchange, res, req);
    });
  });
  const { port, close } = await listen(server);
  return { url: `http://127.0.0.1:${port}`, port, requests, close };
}

/** Answers with a status, a JSON (object) or text (string) body, and headers (which win). */
export function reply(res: ServerResponse, status: number, body?: unknown, headers: Record<string, string> = {}): void {
  const text = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    ...(body !== undefined && typeof body !== 'string' ? { 'content-type': 'application/json' } : {}),
    ...(typeof body === 'string' ? { 'content-type': 'text/plain' } : {}),
    ...headers,
  });
  res.end(text);
}

// --- a recording, failure-injecting proxy in front of a real peer

/** A request as the proxy received it from the route. */
export interface RecordedRequest extends HttpExchange {
  /** The status the client got back (unset when it got none). */
  status?: number;
  /** The status the real peer answered a forwarded request with (even when the client never saw it). */
  upstreamStatus?: number;
}

/**
 * What the proxy does with one request: pass it to the real peer (`path` to rewrite the URL),
 * answer it itself (a failure the peer cannot produce; JSON unless `headers` say otherwise), pass
 * it on and then cut the client off without an answer (the peer has the mail, the client cannot
 * know), cut the connection before reading the body, or never answer.
 */
export type ProxyAction =
  | { do: 'forward'; path?: string }
  | { do: 'answer'; status: number; headers?: Record<string, string>; body?: unknown }
  | { do: 'forward-then-cut'; path?: string }
  | { do: 'cut-before-body' }
  | { do: 'hang' };

/** A loopback HTTP(S) proxy in front of a real peer (an emulator, Prism) that records and injects failures. */
export interface FaultProxy {
  url: string;
  port: number;
  /** Every request whose body the proxy read. */
  requests: RecordedRequest[];
  /** Requests the proxy passed to the peer. */
  forwarded: RecordedRequest[];
  /**
   * Decides each request's fate; replaceable between tests. It is asked twice: with the head
   * (empty body; only `cut-before-body` counts then), and with the whole request.
   * `undefined` forwards.
   */
  behaviour: (req: RecordedRequest) => ProxyAction | undefined;
  close(): Promise<void>;
}

/** Options of {@link startFaultProxy}. */
export interface FaultProxyOptions {
  /** The real peer, e.g. `http://127.0.0.1:4010`. */
  upstream: string;
  /** Serve HTTPS with this key and certificate (e.g. `testCertificate()`). */
  tls?: { key: string; cert: string };
  behaviour?: (req: RecordedRequest) => ProxyAction | undefined;
}

/** Starts a {@link FaultProxy} on a free loopback port. */
export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const upstream = new URL(options.upstream);
  const proxy: FaultProxy = {
    url: '',
    port: 0,
    requests: [],
    forwarded: [],
    behaviour: options.behaviour ?? (() => undefined),
    close: async () => {},
  };
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const head: RecordedRequest = {
      method: req.method ?? 'GET',
      url: req.url ?? '/',
      headers: req.headers,
      body: Buffer.alloc(0),
    };
    if (proxy.behaviour(head)?.do === 'cut-before-body') {
      req.socket.destroy();
      return;
    }
    readBody(req, (body) => {
      const rec: RecordedRequest = { ...head, body };
      proxy.requests.push(rec);
      const action = proxy.behaviour(rec) ?? { do: 'forward' };
      if (action.do === 'answer') {
        rec.status = action.status;
        reply(res, action.status, action.body, { 'content-type': 'application/json', ...(action.headers ?? {}) });
        return;
      }
      if (action.do === 'cut-before-body') {
        req.socket.destroy();
        return;
      }
      if (action.do === 'hang') return;
      proxy.forwarded.push(rec);
      const up = request(
        {
          host: upstream.hostname,
          port: upstream.port,
          method: rec.method,
          path: action.path ?? rec.url,
          headers: { ...req.headers, host: upstream.host },
        },
        (upRes) => {
          readBody(upRes, (answer) => {
            rec.upstreamStatus = upRes.statusCode;
            if (action.do === 'forward-then-cut') {
              req.socket.destroy();
              return;
            }
            const h = { ...upRes.headers };
            delete h['transfer-encoding'];
            rec.status = upRes.statusCode ?? 502;
            res.writeHead(rec.status, { ...h, 'content-length': String(answer.length) });
            res.end(answer);
          });
        },
      );
      up.on('error', () => req.socket.destroy());
      up.end(rec.body);
    });
  };
  const server: Server = options.tls ? createHttpsServer(options.tls, handler) : createHttpServer(handler);
  const { port, close } = await listen(server);
  proxy.port = port;
  proxy.url = `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  proxy.close = close;
  return proxy;
}

// --- a port that cuts every connection

/** A TCP listener that resets every connection at once; `connections` counts them. */
export interface Cutter {
  port: number;
  readonly connections: number;
  close(): Promise<void>;
}

/**
 * A TCP listener that accepts and at once resets every connection: in front of HTTPS the client
 * cannot even finish the TLS handshake, so no byte of the request left it (phase `connect`).
 */
export async function startCutter(): Promise<Cutter> {
  const state = { connections: 0 };
  const server = createTcpServer((s) => {
    state.connections++;
    s.on('error', () => {});
    s.resetAndDestroy();
  });
  const { port, close } = await listen(server);
  return {
    port,
    get connections() {
      return state.connections;
    },
    close,
  };
}
