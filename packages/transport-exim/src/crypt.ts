import { createHash, randomBytes } from 'node:crypto';

const ALPHABET = './0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

function sha512(...parts: Buffer[]): Buffer {
  const h = createHash('sha512');
  for (const p of parts) h.update(p);
  return h.digest();
}

function repeat(source: Buffer, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i += source.length) source.copy(out, i, 0, Math.min(source.length, length - i));
  return out;
}

/** A random crypt(3) salt of 16 characters. */
export function cryptSalt(): string {
  const bytes = randomBytes(16);
  let s = '';
  for (const b of bytes) s += ALPHABET[b & 63];
  return s;
}

/**
 * SHA-512 crypt (`$6$`), as glibc's crypt(3) computes it (Ulrich Drepper's "Unix crypt using
 * SHA-256 and SHA-512"). Exim's `crypteq` hands such a hash to crypt(3), so a relay password is
 * only ever stored hashed. `rounds` 5000 is the default, written without `rounds=`.
 */
export function sha512Crypt(password: string, salt: string = cryptSalt(), rounds = 5000): string {
  if (!Number.isInteger(rounds) || rounds < 1000 || rounds > 999_999_999) throw new RangeError('rounds out of range');
  const saltText = salt.slice(0, 16);
  if (!/^[./0-9A-Za-z]*$/.test(saltText)) throw new TypeError('the salt may use only ./0-9A-Za-z');
  const P = Buffer.from(password, 'utf8');
  const S = Buffer.from(saltText, 'utf8');
  const B = sha512(P, S, P);
  const a = createHash('sha512');
  a.update(P);
  a.update(S);
  let i = P.length;
  for (; i > 64; i -= 64) a.update(B);
  a.update(B.subarray(0, i));
  for (let n = P.length; n > 0; n >>= 1) a.update(n & 1 ? B : P);
  const A = a.digest();
  const dp = createHash('sha512');
  for (let n = 0; n < P.length; n++) dp.update(P);
  const Pstr = repeat(dp.digest(), P.length);
  const ds = createHash('sha512');
  for (let n = 0; n < 16 + A[0]!; n++) ds.update(S);
  const Sstr = repeat(ds.digest(), S.length);
  let C = A;
  for (let r = 0; r < rounds; r++) {
    const h = createHash('sha512');
    h.update(r & 1 ? Pstr : C);
    if (r % 3) h.update(Sstr);
    if (r % 7) h.update(Pstr);
    h.update(r & 1 ? C : Pstr);
    C = h.digest();
  }
  let out = '';
  const put = (b2: number, b1: number, b0: number, n: number) => {
    let w = (b2 << 16) | (b1 << 8) | b0;
    for (let k = 0; k < n; k++) {
      out += ALPHABET[w & 63];
      w >>= 6;
    }
  };
  for (let k = 0; k < 21; k++) {
    const [x, y, z] = k % 3 === 0 ? [k, k + 21, k + 42] : k % 3 === 1 ? [k + 21, k + 42, k] : [k + 42, k, k + 21];
    put(C[x]!, C[y]!, C[z]!, 4);
  }
  put(0, 0, C[63]!, 2);
  return `$6$${rounds === 5000 ? '' : `rounds=${rounds}$`}${saltText}$${out}`;
}
