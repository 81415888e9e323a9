// A native stand-in for the daemon, for plain `node --test` runs.
//
// `TestHost` calls a plugin's handler the way the daemon does: the call's
// emits and state writes are committed only when the handler returns, and —
// given the operator's sidecar `NAME.toml` — grants are enforced the daemon's
// way: an emit of a type outside `[grants] emit` or any state access without
// `[grants] state = true` fails at the call site with the daemon's message,
// and the whole call ends as a reject whatever the handler does with that
// error, committing nothing.
//
//   const host = TestHost.fromSidecar(plugin, 'greeter.toml');
//   assert.equal(host.deliver(makeEvent('user.created', { data: { email: 'a@b.c' } })), null);
//   assert.equal(host.emitted[0].type, 'mail.requested');
import { existsSync, readFileSync } from 'node:fs';
import { parse as parseToml } from 'smol-toml';
import { Context } from './context.js';
import { EmitRefused, HandlerError, Reject, StateFailed } from './errors.js';
import { Event, encodeJson, topicForType } from './event.js';
import { utf8Decode, utf8Encode } from './utf8.js';

/** `time` of every event built or emitted by the test host. */
export const TEST_TIME = '2025-01-01T00:00:00Z';

let nextId = 1;
const testId = () => `00000000-0000-7000-8000-${(nextId++).toString(16).padStart(12, '0')}`;

/** An event as the daemon would deliver it. `data` is encoded as JSON, `text` as plain text. */
export function makeEvent(type, { data, text, id, subject = null, topic, actor = null, attempt = 1, extensions = [] } = {}) {
  id = id ?? testId();
  let payload = null;
  let contentType = null;
  if (data !== undefined) {
    payload = encodeJson(data, "the test event's data");
    contentType = 'application/json';
  } else if (text !== undefined) {
    payload = utf8Encode(text);
    contentType = 'text/plain; charset=utf-8';
  }
  return new Event({
    id, source: 'test', specversion: '1.0', type, subject, time: TEST_TIME,
    datacontenttype: contentType, dataschema: null, data: payload, correlationid: id,
    causationid: null, actor, extensions: [...extensions], topic: topic ?? topicForType(type),
    partition: 0, offset: 0, stream: null, streamversion: null, attempt,
  });
}

/** The daemon's glob syntax (`*`, `?`, `[a-z]`, `[!a]`, `{a,b}`) as a RegExp. */
export function globRegex(pattern) {
  let out = '';
  let depth = 0;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '*') out += '.*';
    else if (c === '?') out += '.';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) throw new Error(`glob ${JSON.stringify(pattern)}: unclosed '['`);
      let body = pattern.slice(i + 1, end).replace(/\\/g, '\\\\');
      if (body.startsWith('!')) body = '^' + body.slice(1);
      out += `[${body}]`;
      i = end;
    } else if (c === '{') {
      depth++;
      out += '(?:';
    } else if (c === '}' && depth) {
      depth--;
      out += ')';
    } else if (c === ',' && depth) out += '|';
    else out += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  if (depth) throw new Error(`glob ${JSON.stringify(pattern)}: unclosed '{'`);
  return new RegExp(`^(?:${out})$`, 's');
}

/** What the operator granted: `emit` globs and `state`; `source` is the sidecar path named in refusals. */
export class Grants {
  constructor({ emit = [], state = false, source = null } = {}) {
    this.emit = emit;
    this.state = state;
    this.source = source;
    this.patterns = emit.map(globRegex);
  }

  static all() {
    return new Grants({ emit: ['*'], state: true });
  }

  mayEmit(type) {
    return this.patterns.some((p) => p.test(type));
  }

  #how(edit) {
    return this.source ? `; ${edit} in ${this.source}` : '';
  }

  refuseEmit(plugin, type) {
    const has = this.emit.length ? `its \`emit\` grant allows ${this.emit.join(', ')}` : 'it has no `emit` grant';
    const how = this.#how(`add "${type}" (or a pattern matching it) to emit under [grants]`);
    return `plugin \`${plugin}\` may not emit type \`${type}\`: ${has}${how}`;
  }

  refuseState(plugin) {
    return `plugin \`${plugin}\` has no \`state\` grant${this.#how('add "state = true" under [grants]')}`;
  }
}

const SIDECAR_KEYS = new Set(['subscriptions', 'retry', 'timeout', 'memory', 'fuel', 'concurrency', 'ordering', 'config', 'grants']);

function configValue(key, value) {
  if (['string', 'number', 'boolean', 'bigint'].includes(typeof value)) return String(value);
  if (value instanceof Date) return value.toISOString();
  throw new Error(`config.${key}: values must be strings, numbers or booleans`);
}

/** The grants and config of sidecar `path`; a missing file grants nothing (as in the daemon). */
export function readSidecar(path) {
  const grants = new Grants({ source: path });
  if (!existsSync(path)) return { grants, config: {} };
  let doc;
  try {
    doc = parseToml(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`${path}: ${err.message}`);
  }
  for (const key of Object.keys(doc)) if (!SIDECAR_KEYS.has(key)) throw new Error(`${path}: unknown key \`${key}\``);
  const spec = doc.grants ?? {};
  for (const key of Object.keys(spec)) if (key !== 'emit' && key !== 'state') throw new Error(`${path}: unknown key \`grants.${key}\``);
  const config = {};
  for (const [k, v] of Object.entries(doc.config ?? {})) config[k] = configValue(k, v);
  return { grants: new Grants({ emit: (spec.emit ?? []).map(String), state: spec.state === true, source: path }), config };
}

const byteOrder = (a, b) => {
  const x = utf8Encode(a);
  const y = utf8Encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
};

/** An in-memory daemon for one plugin. Without a sidecar every grant is
 * given; `TestHost.fromSidecar` enforces the operator's. */
export class TestHost {
  constructor(plugin, { grants = Grants.all(), config = {}, state = {} } = {}) {
    this.plugin = plugin;
    this.name = plugin.name;
    this.grants = grants;
    this.config = { ...config };
    this.state = new Map(Object.entries(state).map(([k, v]) => [k, encodeJson(v, `state key \`${k}\``)]));
    this.emitted = [];
    this.logs = [];
    this.offsets = new Map();
  }

  /** A host with the grants and config of the sidecar at `path` (plus `config` overrides). */
  static fromSidecar(plugin, path, { config = {}, state = {} } = {}) {
    const sidecar = readSidecar(path);
    return new TestHost(plugin, { grants: sidecar.grants, config: { ...sidecar.config, ...config }, state });
  }

  /** Calls the handler with `event`. Returns null when it succeeded (its
   * effects are committed) or the `HandlerError` the daemon would see
   * (nothing committed). Any other exception propagates; in the daemon it
   * becomes a retry whose message names it. */
  deliver(event) {
    const call = new CallHost(this, event);
    let error = null;
    try {
      this.plugin.call(event, new Context(call));
    } catch (err) {
      if (err instanceof HandlerError) error = err;
      else if (call.refused === null) throw err;
    }
    // A refused grant can never succeed: the daemon rejects the call
    // whatever the handler made of the error.
    if (call.refused !== null) return new Reject(call.refused);
    if (error) return error;
    for (const [key, value] of call.writes) {
      if (value === null) this.state.delete(key);
      else this.state.set(key, value);
    }
    for (const emitted of call.emits) {
      emitted.offset = this.offsets.get(emitted.topic) ?? 0;
      this.offsets.set(emitted.topic, emitted.offset + 1);
      this.emitted.push(emitted);
    }
    return null;
  }

  /** Delivers as the daemon does under a policy of `maxAttempts`: again with
   * `attempt` increased while the handler asks for a retry. Returns
   * `{ attempts, result }`; backoff is not waited. */
  deliverWithRetries(event, maxAttempts = 5) {
    const first = event.attempt;
    for (;;) {
      const result = this.deliver(event);
      const attempts = event.attempt - first + 1;
      if (result && result.kind === 'retry' && attempts < maxAttempts) {
        event.attempt += 1;
        continue;
      }
      return { attempts, result };
    }
  }

  /** The committed JSON value under `key`, or `fallback`. */
  stateJson(key, fallback = null) {
    const raw = this.state.get(key);
    return raw === undefined ? fallback : JSON.parse(utf8Decode(raw));
  }

  /** All committed keys in ascending byte order, reserved ones included. */
  stateKeys() {
    return [...this.state.keys()].sort(byteOrder);
  }
}

/** One call: committed state plus this call's buffered writes and emits. */
class CallHost {
  constructor(host, handled) {
    this.host = host;
    this.handled = handled;
    this.writes = new Map();
    this.emits = [];
    this.refused = null;
  }

  refuse(message) {
    if (this.refused === null) this.refused = message;
    return message;
  }

  emit(out) {
    if (!out.type) throw new EmitRefused('event type must not be empty');
    if (!this.host.grants.mayEmit(out.type)) throw new EmitRefused(this.refuse(this.host.grants.refuseEmit(this.host.name, out.type)));
    const id = out.id ?? testId();
    this.emits.push(new Event({
      id, source: `evhost://plugin/${this.host.name}`, specversion: '1.0', type: out.type,
      subject: out.subject, time: TEST_TIME,
      datacontenttype: out.datacontenttype ?? (out.data != null ? 'application/json' : null),
      dataschema: out.dataschema, data: out.data, correlationid: this.handled.correlationid,
      causationid: this.handled.id, actor: out.actor ?? this.handled.actor, extensions: [...out.extensions],
      topic: out.topic ?? topicForType(out.type), partition: 0, offset: 0, stream: null, streamversion: null, attempt: 1,
    }));
    return id;
  }

  checkState() {
    if (!this.host.grants.state) throw new StateFailed(this.refuse(this.host.grants.refuseState(this.host.name)));
  }

  stateGet(key) {
    this.checkState();
    if (this.writes.has(key)) return this.writes.get(key);
    return this.host.state.get(key) ?? null;
  }

  stateSet(key, value) {
    this.checkState();
    this.writes.set(key, Uint8Array.from(value));
  }

  stateDelete(key) {
    this.checkState();
    this.writes.set(key, null);
  }

  stateKeys(prefix) {
    this.checkState();
    const merged = new Map([...this.host.state, ...this.writes]);
    return [...merged].filter(([k, v]) => v !== null && k.startsWith(prefix)).map(([k]) => k).sort(byteOrder);
  }

  configGet(key) {
    return this.host.config[key] ?? null;
  }

  configEntries() {
    return Object.entries(this.host.config).sort(([a], [b]) => byteOrder(a, b));
  }

  log(level, message, fields) {
    this.host.logs.push({ level, message, fields });
  }
}
