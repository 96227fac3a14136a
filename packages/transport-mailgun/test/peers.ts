import { type ChildProcess, spawn } from 'node:child_process';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo, Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { freePort } from '@mailvia/core/testing';

/** A running Prism mock server serving one contract file. */
export interface Prism {
  url: string;
  port: number;
  /** What Prism printed (for a failing test's message). */
  log(): string;
  close(): Promise<void>;
}

/**
 * Starts Prism (`@stoplight/prism-cli`, with this process's Node) on a free loopback port, serving
 * `spec`; resolves once it listens. Throws when Prism is not installed: a missing peer fails the suite.
 */
export async function startPrism(spec: string, timeoutMs = 60_000): Promise<Prism> {
  const require = createRequire(import.meta.url);
  const bin = join(dirname(require.resolve('@stoplight/prism-cli/package.json')), 'dist', 'index.js');
  const port = await freePort();
  const child: ChildProcess = spawn(process.execPath, [bin, 'mock', '-h', '127.0.0.1', '-p', String(port), spec], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const collect = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-20_000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`Prism did not start within ${timeoutMs} ms:\n${output}`));
    }, timeoutMs);
    const onData = () => {
      if (/Prism is listening/.test(output)) {
        clearTimeout(timer);
        child.stdout?.off('data', onData);
        resolve();
      }
    };
    child.stdout?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`Prism exited with ${code}:\n${output}`));
    });
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    log: () => output,
    close: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        process.kill(child.pid!, 'SIGTERM');
      }),
  };
}

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
 * Starts a node:http server on 127.0.0.1 that reads each request's whole body, records it, then
 * lets `answer` respond (or destroy the socket, or say nothing).
 */
export async function startHttpPeer(
  answer: (exchange: HttpExchange, res: ServerResponse, req: IncomingMessage) => void,
): Promise<HttpPeer> {
  const requests: HttpExchange[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const exchange = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks),
      };
      requests.push(exchange);
      answer(exchange, res, req);
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** Answers with a status, JSON (or text) body and headers. */
export function reply(res: ServerResponse, status: number, body?: unknown, headers: Record<string, string> = {}): void {
  const text = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    ...(body !== undefined && typeof body !== 'string' ? { 'content-type': 'application/json' } : {}),
    ...(typeof body === 'string' ? { 'content-type': 'text/plain' } : {}),
    ...headers,
  });
  res.end(text);
}
