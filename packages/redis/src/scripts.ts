import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';

/** A Lua script run with EVALSHA (EVAL when Redis does not know it yet, e.g. after a restart). */
export function script(lua: string, keys: number) {
  const sha = createHash('sha1').update(lua).digest('hex');
  return async (redis: Redis, keyList: string[], args: (string | number)[]): Promise<unknown> => {
    if (keyList.length < keys) throw new Error(`the script needs ${keys} keys`);
    try {
      return await redis.evalsha(sha, keyList.length, ...keyList, ...args);
    } catch (e) {
      if (!(e instanceof Error) || !e.message.includes('NOSCRIPT')) throw e;
      return redis.eval(lua, keyList.length, ...keyList, ...args);
    }
  };
}
