import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express5 from 'express';
import express4 from 'express4';

/** The two Express majors the package supports; the HTTP tests run against both. */
export const EXPRESS_VERSIONS = [
  { name: 'express 4', express: express4 as typeof express5, major: 4 },
  { name: 'express 5', express: express5, major: 5 },
] as const;

export interface Served {
  url: string;
  close(): Promise<void>;
}

/** Serves an app on a free loopback port. */
export function serve(app: { listen(port: number, host: string): Server }): Promise<Served> {
  return new Promise((resolve, reject) => {
    const server = app.listen(0, '127.0.0.1');
    server.once('error', reject);
    server.once('listening', () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}`,
        close: () =>
          new Promise<void>((r) => {
            server.closeAllConnections?.();
            server.close(() => r());
          }),
      });
    });
  });
}

/** Reads a JSON answer. */
export async function json(res: Response): Promise<any> {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`not JSON (HTTP ${res.status}): ${text.slice(0, 300)}`);
  }
}
