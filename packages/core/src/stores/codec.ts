import type { PreparedMessage } from '../message.js';

/**
 * A prepared message as JSON text, attachment bytes included (as base64): what stores write.
 * {@link decodeMessage} gives back an equal message.
 */
export function encodeMessage(message: PreparedMessage): string {
  const attachments = message.attachments.map((a) =>
    a.content instanceof Uint8Array
      ? {
          ...a,
          content: Buffer.from(a.content.buffer, a.content.byteOffset, a.content.byteLength).toString('base64'),
          encoding: 'base64' as const,
        }
      : a,
  );
  return JSON.stringify({ ...message, attachments });
}

/** The message {@link encodeMessage} wrote. Attachments come back as base64 strings (same bytes). */
export function decodeMessage(text: string): PreparedMessage {
  return JSON.parse(text) as PreparedMessage;
}
