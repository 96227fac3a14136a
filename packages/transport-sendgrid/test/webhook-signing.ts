import { generateKeyPairSync } from 'node:crypto';

// Test helpers for SendGrid's Signed Event Webhook, shared with @mailvia/express's tests.

/** A P-256 key pair of an organisation; SendGrid shows the public key as base64 DER. */
export function sendgridKeys() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { privateKey, publicKey: publicKey.export({ format: 'der', type: 'spki' }).toString('base64') };
}

/** The other valid form of an ECDSA P-256 signature: (r, n - s), DER-encoded. */
export function malleate(signatureB64: string): string {
  const der = Buffer.from(signatureB64, 'base64');
  const int = (at: number) => ({ len: der[at + 1]!, value: der.subarray(at + 2, at + 2 + der[at + 1]!) });
  const r = int(2);
  const s = int(4 + r.len);
  const n = BigInt('0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551');
  const s2 = n - BigInt(`0x${s.value.toString('hex')}`);
  const enc = (v: Buffer) => {
    const bytes = v[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v;
    return Buffer.concat([Buffer.from([0x02, bytes.length]), bytes]);
  };
  let hex = s2.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  const body = Buffer.concat([enc(r.value), enc(Buffer.from(hex, 'hex'))]);
  return Buffer.concat([Buffer.from([0x30, body.length]), body]).toString('base64');
}
