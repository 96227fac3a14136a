import { composeMime, type PreparedMessage } from '@mailvia/core';

/**
 * The message as Gmail must receive it: core's `composeMime` bytes (the same bytes every SMTP
 * route sends), with a `Bcc:` header in front when the message has Bcc recipients. Gmail has no
 * envelope: it sends to the addresses of the To, Cc and Bcc headers, and takes Bcc out itself.
 */
export async function gmailMime(message: PreparedMessage): Promise<Buffer> {
  const mime = await composeMime(message);
  if (message.bcc.length === 0) return mime;
  // addresses are ASCII (IDN domains in punycode): no encoding needed; one per folded line
  const bcc = `Bcc: ${message.bcc.map((a) => a.address).join(',\r\n ')}\r\n`;
  return Buffer.concat([Buffer.from(bcc, 'ascii'), mime]);
}

/**
 * `raw` for the JSON form of `users.messages.send`: base64url with padding, the discovery
 * document's `format: byte` ("a padded, base64-encoded string of bytes, encoded with a URL and
 * filename safe alphabet").
 */
export function base64urlPadded(bytes: Buffer): string {
  return bytes.toString('base64').replace(/\+/g, '-').replace(/\//g, '_');
}
