// UTF-8 both ways. QuickJS (the component's engine) has no TextEncoder or
// TextDecoder; Node has both and they are used when present.

/** `text` as UTF-8 bytes. */
export function utf8Encode(text) {
  if (typeof TextEncoder !== 'undefined') return new TextEncoder().encode(text);
  const out = [];
  for (const ch of String(text)) {
    let c = ch.codePointAt(0);
    if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd; // a lone surrogate
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return Uint8Array.from(out);
}

/** `bytes` as text; with `fatal`, invalid UTF-8 throws, otherwise it becomes U+FFFD. */
export function utf8Decode(bytes, fatal = false) {
  if (typeof TextDecoder !== 'undefined') return new TextDecoder('utf-8', { fatal }).decode(bytes);
  let out = '';
  const b = bytes;
  for (let i = 0; i < b.length; ) {
    const x = b[i];
    const need = x < 0x80 ? 0 : x >= 0xc2 && x < 0xe0 ? 1 : x >= 0xe0 && x < 0xf0 ? 2 : x >= 0xf0 && x < 0xf5 ? 3 : -1;
    let c = need === 0 ? x : need === 1 ? x & 31 : need === 2 ? x & 15 : x & 7;
    let ok = need >= 0 && i + need < b.length;
    for (let k = 1; ok && k <= need; k++) {
      const y = b[i + k];
      if (y === undefined || (y & 0xc0) !== 0x80) ok = false;
      else c = (c << 6) | (y & 63);
    }
    if (ok && ((need === 2 && (c < 0x800 || (c >= 0xd800 && c <= 0xdfff))) || (need === 3 && (c < 0x10000 || c > 0x10ffff)))) ok = false;
    if (!ok) {
      if (fatal) throw new TypeError(`invalid UTF-8 at byte ${i}`);
      out += '\ufffd';
      i += 1;
      continue;
    }
    out += String.fromCodePoint(c);
    i += need + 1;
  }
  return out;
}
