// What a handler can do during one call: emit, state, config, log, and the
// idempotency helper whose state-key layout is the Rust SDK's, byte for byte
// (`__evhost/handled/seq`, `__evhost/handled/id/ID`, `__evhost/handled/slot/N`),
// so a plugin ported between languages keeps its records.
import { JsonError, Reject } from './errors.js';
import { encodeJson } from './event.js';
import { utf8Decode, utf8Encode } from './utf8.js';

/** State keys under this prefix belong to the SDK (the idempotency records). */
export const RESERVED_PREFIX = '__evhost/';
/** How many handled ids `cx.once` remembers by default. */
export const DEFAULT_DEDUPE_WINDOW = 10000;
/** Severities of a log line (the WIT enum `level`). */
export const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

const SEQ_KEY = '__evhost/handled/seq';
const idKey = (id) => `${RESERVED_PREFIX}handled/id/${id}`;
const slotKey = (slot) => `${RESERVED_PREFIX}handled/slot/${slot}`;

/** The handler's view of the host for one call. Its methods throw SDK errors
 * (`EmitRefused`, `StateFailed`, `JsonError`) that are handler errors of the
 * right kind when they escape the handler. */
export class Context {
  constructor(host) {
    this.host = host;
    this.dedupeWindow = DEFAULT_DEDUPE_WINDOW;
  }

  /** Queues `event` for publication when the call succeeds; returns its id. */
  emit(event) {
    return this.host.emit(event);
  }

  /** Raw bytes under `key` (this call's own writes included), or null. */
  stateGetBytes(key) {
    return this.host.stateGet(key);
  }

  /** Stores raw bytes under `key`; committed with the call. */
  stateSetBytes(key, value) {
    this.host.stateSet(key, Uint8Array.from(value));
  }

  /** The JSON value under `key`, or `fallback` when there is none. */
  stateGet(key, fallback = null) {
    const raw = this.stateGetBytes(key);
    if (raw == null) return fallback;
    try {
      return JSON.parse(utf8Decode(raw));
    } catch (err) {
      throw new JsonError(`decoding state key \`${key}\`: ${err.message}`);
    }
  }

  /** Stores `value` as JSON under `key`. */
  stateSet(key, value) {
    this.stateSetBytes(key, encodeJson(value, `state key \`${key}\``));
  }

  /** Removes `key`; removing a missing key is not an error. */
  stateDelete(key) {
    this.host.stateDelete(key);
  }

  /** Keys starting with `prefix` in ascending order, without the SDK's
   * reserved keys unless `prefix` asks for them. */
  stateKeys(prefix = '') {
    const keys = this.host.stateKeys(prefix);
    return prefix.startsWith(RESERVED_PREFIX) ? keys : keys.filter((k) => !k.startsWith(RESERVED_PREFIX));
  }

  /** The operator's setting `key` (sidecar `[config]`), or `fallback`. */
  config(key, fallback = null) {
    const value = this.host.configGet(key);
    return value == null ? fallback : value;
  }

  /** Setting `key` as an integer; a reject naming the key when it is not one. */
  configInt(key, fallback) {
    return this.#typed(key, fallback, 'an integer', (t) => (/^[+-]?\d+$/.test(t) ? Number(t) : undefined));
  }

  /** Setting `key` as a number; a reject naming the key when it is not one. */
  configNumber(key, fallback) {
    return this.#typed(key, fallback, 'a number', (t) => (t.trim() !== '' && !Number.isNaN(Number(t)) ? Number(t) : undefined));
  }

  /** Setting `key` as true/false; a reject naming the key otherwise. */
  configBool(key, fallback) {
    return this.#typed(key, fallback, 'true or false', (t) => (t === 'true' ? true : t === 'false' ? false : undefined));
  }

  /** All settings as [key, value] pairs, sorted by key. */
  configEntries() {
    return this.host.configEntries();
  }

  #typed(key, fallback, what, parse) {
    const text = this.host.configGet(key);
    if (text == null) return fallback;
    const value = parse(text);
    if (value === undefined) throw new Reject(`config \`${key}\` must be ${what}, got ${JSON.stringify(text)}`);
    return value;
  }

  /** One structured log line; `fields` (an object) become key/value strings. */
  log(level, message, fields = {}) {
    if (!LEVELS.includes(level)) throw new Error(`unknown log level ${level}; use one of ${LEVELS.join(', ')}`);
    this.host.log(level, String(message), Object.entries(fields).map(([k, v]) => [k, String(v)]));
  }

  trace(message, fields) { this.log('trace', message, fields); }
  debug(message, fields) { this.log('debug', message, fields); }
  info(message, fields) { this.log('info', message, fields); }
  warn(message, fields) { this.log('warn', message, fields); }
  error(message, fields) { this.log('error', message, fields); }

  /** Runs `f(cx)` unless `event` was already handled, then marks it handled;
   * the mark commits with `f`'s effects or not at all. */
  once(event, f) {
    if (this.alreadyHandled(event)) {
      this.debug('skipping an event already handled', { id: event.id });
      return;
    }
    f(this);
    this.markHandled(event);
  }

  /** Whether `event`'s id was marked in a committed call (or earlier in this one). */
  alreadyHandled(event) {
    return this.stateGetBytes(idKey(event.id)) != null;
  }

  /** Records `event`'s id as handled, forgetting the oldest id when the window is full. */
  markHandled(event) {
    const key = idKey(event.id);
    if (this.stateGetBytes(key) != null) return;
    const seq = Number(this.stateGet(SEQ_KEY, 0)) + 1;
    if (this.dedupeWindow > 0) {
      const slot = slotKey(seq % this.dedupeWindow);
      const old = this.stateGetBytes(slot);
      if (old != null) this.stateDelete(idKey(utf8Decode(old)));
      this.stateSetBytes(slot, utf8Encode(event.id));
    }
    this.stateSet(key, seq);
    this.stateSet(SEQ_KEY, seq);
  }

  /** How many handled ids are remembered (0: without bound); the same value every call. */
  setDedupeWindow(window) {
    this.dedupeWindow = Number(window);
  }
}
