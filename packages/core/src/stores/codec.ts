import type { PreparedMessage } from '../message.js';

/**
 * A prepared message as plain JSON data, attachment bytes included (as base64): what stores
 * keep. The message itself when it holds no bytes. {@link decodeMessage} gives back an equal message.
 */
export function messageToJSON(message: PreparedMessage): PreparedMessage {
  if (!message.attachments.some((a) => a.content instanceof Uint8Array)) return message;
  const attachments = message.attachments.map((a) =>
    a.content instanceof Uint8Array
      ? {
          ...a,
          content: Buffer.from(a.content.buffer, a.content.byteOffset, a.content.byteLength).toString('base64'),
          encoding: 'base64' as const,
        }
      : a,
  );
  return { ...message, attachments };
}

/** {@link messageToJSON} as JSON text. */
export function encodeMessage(message: PreparedMessage): string {
  return JSON.stringify(messageToJSON(message));
}

/** The message {@link encodeMessage} wrote. Attachments come back as base64 strings (same bytes). */
export function decodeMessage(text: string): PreparedMessage {
  return JSON.parse(text) as PreparedMessage;
}
