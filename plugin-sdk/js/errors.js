// Handler failures (what the host sees) and SDK failures (what a helper reports).

/** Why a handler failed: `kind` is "retry" (transient: called again with
 * backoff) or "reject" (permanent: parked in the dead-letter store at once).
 * Either way nothing the call emitted or wrote is committed. */
export class HandlerError extends Error {
  constructor(kind, message) {
    super(`${kind}: ${message}`);
    this.kind = kind;
    this.message = String(message);
  }

  toString() {
    return `${this.kind}: ${this.message}`;
  }
}

/** A transient failure: the host calls again after a backoff. */
export class Retry extends HandlerError {
  constructor(message) {
    super('retry', message);
    this.name = 'Retry';
  }
}

/** A permanent failure: the event is dead-lettered without further attempts. */
export class Reject extends HandlerError {
  constructor(message) {
    super('reject', message);
    this.name = 'Reject';
  }
}

/** The event carries no payload (a reject). */
export class MissingData extends Reject {
  constructor() {
    super('the event has no data');
    this.name = 'MissingData';
  }
}

/** A value did not encode to or decode from JSON (a reject). */
export class JsonError extends Reject {
  constructor(message) {
    super(message);
    this.name = 'JsonError';
  }
}

/** The host refused an emit: invalid, or its type is not granted (a reject). */
export class EmitRefused extends Reject {
  constructor(message) {
    super(`emit refused: ${message}`);
    this.name = 'EmitRefused';
  }
}

/** The host's state store failed, or the plugin lacks the `state` grant (a retry). */
export class StateFailed extends Retry {
  constructor(message) {
    super(`state store failed: ${message}`);
    this.name = 'StateFailed';
  }
}
