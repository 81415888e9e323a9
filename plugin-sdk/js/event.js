// The delivered event and the builder for emitted ones.
import { JsonError, MissingData } from './errors.js';
import { utf8Decode, utf8Encode } from './utf8.js';

/** The topic an event type goes to when none is given: `user.created` -> `user-events`. */
export function topicForType(type) {
  return `${type.split('.')[0]}-events`;
}

/** JSON bytes as serde_json writes them (compact, UTF-8). */
export function encodeJson(value, what) {
  let text;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    throw new JsonError(`encoding ${what}: ${err.message}`);
  }
  if (text === undefined) throw new JsonError(`encoding ${what}: not representable as JSON`);
  return utf8Encode(text);
}

/** One event as delivered to a handler (the WIT record `event`, camelCase
 * fields: `id`, `type`, `subject`, `data` (Uint8Array or null), `attempt`, ...). */
export class Event {
  constructor(fields) {
    Object.assign(this, fields);
  }

  /** The payload as UTF-8 text; `MissingData` or a reject when it is not text. */
  text() {
    if (this.data == null) throw new MissingData();
    try {
      return utf8Decode(this.data, true);
    } catch (err) {
      throw new JsonError(`the event data is not UTF-8: ${err.message}`);
    }
  }

  /** The payload decoded as JSON; a reject (`JsonError`) when it is not JSON. */
  json() {
    const text = this.text();
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new JsonError(`decoding the data of event ${this.id} (${this.type}): ${err.message}`);
    }
  }

  /** The value of extension attribute `name`, or null. */
  extension(name) {
    const found = (this.extensions || []).find(([key]) => key === name);
    return found ? found[1] : null;
  }
}

/** An event to publish with `cx.emit`. Only the type is required; the host
 * fills in id, time, source, correlationid, causationid, topic (derived from
 * the type) and actor (inherited). Setters chain:
 * `new OutgoingEvent('order.created').withSubject('o-1').withJson({ total: 42 })`. */
export class OutgoingEvent {
  constructor(type) {
    this.type = type;
    this.subject = null;
    this.id = null;
    this.topic = null;
    this.datacontenttype = null;
    this.dataschema = null;
    this.data = null;
    this.actor = null;
    this.extensions = [];
  }

  /** The partition key: events with the same subject stay in order. */
  withSubject(subject) {
    this.subject = subject;
    return this;
  }

  /** An explicit id; a deterministic one makes the emit idempotent across retries. */
  withId(id) {
    this.id = id;
    return this;
  }

  /** Publish to `topic` instead of the one derived from the type. */
  withTopic(topic) {
    this.topic = topic;
    return this;
  }

  /** Sets `dataschema`. */
  withDataschema(schema) {
    this.dataschema = schema;
    return this;
  }

  /** Sets the `actor` extension (by default inherited from the handled event). */
  withActor(actor) {
    this.actor = actor;
    return this;
  }

  /** Adds a CloudEvents extension attribute. */
  withExtension(name, value) {
    this.extensions.push([name, String(value)]);
    return this;
  }

  /** The payload: `value` as JSON (`application/json`). */
  withJson(value) {
    this.data = encodeJson(value, `the data of emitted event ${this.type}`);
    this.datacontenttype = 'application/json';
    return this;
  }

  /** The payload: UTF-8 text (`text/plain; charset=utf-8`). */
  withText(text) {
    this.data = utf8Encode(text);
    this.datacontenttype = 'text/plain; charset=utf-8';
    return this;
  }

  /** The payload: raw bytes with the given content type. */
  withBytes(data, contentType) {
    this.data = Uint8Array.from(data);
    this.datacontenttype = contentType;
    return this;
  }
}
