// A plugin: its name, version, subscriptions, retry policy and handler.
const NAME = /^[a-z0-9][a-z0-9-]{0,63}$/;

/** Checks the one naming rule — 1 to 64 lowercase letters, digits or '-',
 * not starting with '-' — and returns `name`; otherwise throws an error that
 * suggests a valid name. */
export function checkName(name) {
  if (NAME.test(name)) return name;
  const suggestion = String(name).toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+/, '').slice(0, 64) || 'my-plugin';
  throw new Error(
    `plugin name ${JSON.stringify(name)} must be 1 to 64 lowercase letters, digits or '-', not starting with '-'; try ${JSON.stringify(suggestion)}`,
  );
}

/** The host default: 5 attempts, 200 ms doubling up to 30 s, 20 % jitter. */
export const DEFAULT_RETRY = Object.freeze({ maxAttempts: 5, initialBackoffMs: 200, maxBackoffMs: 30000, multiplier: 2, jitter: 0.2 });

/** Who the plugin is and what it consumes; `plugin.handler(fn)` registers the
 * handler `fn(event, cx)`. The build exports it as the component. */
export class Plugin {
  constructor({ name, version = '0.1.0', subscribe = [], retry = null }) {
    this.name = checkName(name);
    this.version = version;
    this.subscriptions = subscribe.map(([topic, eventType]) => ({ topic, eventType }));
    this.retry = retry ? { ...DEFAULT_RETRY, ...retry } : null;
    this.handlerFn = null;
  }

  /** Registers `fn(event, cx)` as the handler; returns it. */
  handler(fn) {
    this.handlerFn = fn;
    return fn;
  }

  /** Runs the registered handler (what both hosts call). */
  call(event, cx) {
    if (!this.handlerFn) throw new Error(`plugin ${this.name} has no handler: register one with plugin.handler(fn)`);
    return this.handlerFn(event, cx);
  }
}
