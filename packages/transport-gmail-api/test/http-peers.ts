import { createServer as createHttpServer, type IncomingHttpHeaders, request, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { type AddressInfo, createServer as createTcpServer, type Socket } from 'node:net';

/** A request as the proxy received it from the route. */
export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The status the client got back (unset when it got none). */
  status?: number;
  /** The status the real peer answered a forwarded request with (even when the client never saw it). */
  upstreamStatus?: number;
}

/**
 * What the proxy does with one request: pass it to the real peer, answer it itself (a failure
 * the peer cannot produce), pass it on and then cut the client off without an answer (the peer
 * has the mail, the client cannot know), cut the connection before reading the body, or never answer.
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
  requests: RecordedRequest[];
  /** Requests the proxy passed to the peer. */
  forwarded: RecordedRequest[];
  behaviour: (req: RecordedRequest) => ProxyAction | undefined;
  close(): Promise<void>;
}

export async function startFaultProxy(options: {
  upstream: string;
  tls?: { key: string; cert: string };
  behaviour?: (req: RecordedRequest) => ProxyAction | undefined;
}): Promise<FaultProxy> {
  const upstream = new URL(options.upstream);
  const sockets = new Set<Socket>();
  const proxy: FaultProxy = {
    url: '',
    port: 0,
    requests: [],
    forwarded: [],
    behaviour: options.behaviour ?? (() => undefined),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  const handler = (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
    const head: RecordedRequest = {
      method: req.method ?? 'GET',
      url: req.url ?? '/',
      headers: req.headers,
      body: Buffer.alloc(0),
    };
    const early = proxy.behaviour(head);
    if (early?.do === 'cut-before-body') {
      req.socket.destroy();
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rec: RecordedRequest = { ...head, body: Buffer.concat(chunks) };
      proxy.requests.push(rec);
      const action = proxy.behaviour(rec) ?? { do: 'forward' };
      if (action.do === 'answer') {
        const body =
          action.body === undefined ? '' : typeof action.body === 'string' ? action.body : JSON.stringify(action.body);
        rec.status = action.status;
        res.writeHead(action.status, { 'content-type': 'application/json', ...(action.headers ?? {}) });
        res.end(body);
        return;
      }
      if (action.do === 'cut-before-body') {
        req.socket.destroy();
        return;
      }
      if (action.do === 'hang') return;
      proxy.forwarded.push(rec);
      const headers = { ...req.headers, host: upstream.host };
      const up = request(
        { host: upstream.hostname, port: upstream.port, method: rec.method, path: action.path ?? rec.url, headers },
        (upRes) => {
          const body: Buffer[] = [];
          upRes.on('data', (c: Buffer) => body.push(c));
          upRes.on('end', () => {
            rec.upstreamStatus = upRes.statusCode;
            if (action.do === 'forward-then-cut') {
              req.socket.destroy();
              return;
            }
            const h = { ...upRes.headers };
            delete h['transfer-encoding'];
            rec.status = upRes.statusCode ?? 502;
            res.writeHead(upRes.statusCode ?? 502, { ...h, 'content-length': String(Buffer.concat(body).length) });
            res.end(Buffer.concat(body));
          });
        },
      );
      up.on('error', () => req.socket.destroy());
      up.end(rec.body);
    });
  };
  const server: Server = options.tls ? createHttpsServer(options.tls, handler) : createHttpServer(handler);
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  proxy.port = (server.address() as AddressInfo).port;
  proxy.url = `${options.tls ? 'https' : 'http'}://127.0.0.1:${proxy.port}`;
  return proxy;
}

/**
 * A TCP listener that accepts and at once cuts every connection: in front of HTTPS, the client
 * cannot even finish the TLS handshake, so no byte of the request left it.
 */
export async function startCutter(): Promise<{ port: number; connections: number; close(): Promise<void> }> {
  const state = { connections: 0 };
  const server = createTcpServer((s) => {
    state.connections++;
    s.on('error', () => {});
    s.resetAndDestroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    get connections() {
      return state.connections;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
