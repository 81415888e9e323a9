// The glue between the SDK and the WIT imports of the `evhost:plugin/plugin`
// world, as componentize-qjs exposes them (an interface is a default import;
// a `result` import returns the ok value or throws the error value).
// Loadable only inside a component.
import emitIface from 'evhost:plugin/emit@0.1.0';
import stateIface from 'evhost:plugin/state@0.1.0';
import logIface from 'evhost:plugin/log@0.1.0';
import configIface from 'evhost:plugin/config@0.1.0';
import { Context } from './context.js';
import { EmitRefused, HandlerError, StateFailed } from './errors.js';
import { Event } from './event.js';

const message = (err) => (err instanceof Error ? err.message : String(err));

function state(fn) {
  try {
    return fn();
  } catch (err) {
    throw new StateFailed(message(err));
  }
}

const witHost = {
  emit(out) {
    try {
      return emitIface.emit({
        type: out.type,
        subject: out.subject,
        id: out.id,
        topic: out.topic,
        datacontenttype: out.datacontenttype,
        dataschema: out.dataschema,
        data: out.data,
        actor: out.actor,
        extensions: out.extensions,
      });
    } catch (err) {
      throw new EmitRefused(message(err));
    }
  },
  stateGet: (key) => state(() => stateIface.get(key) ?? null),
  stateSet: (key, value) => state(() => stateIface.set(key, value)),
  stateDelete: (key) => state(() => stateIface.delete(key)),
  stateKeys: (prefix) => state(() => stateIface.listKeys(prefix)),
  configGet: (key) => configIface.get(key) ?? null,
  configEntries: () => configIface.entries(),
  log: (level, msg, fields) => logIface.log(level, msg, fields),
};

/** The `describe` and `handle` exports for `plugin`. A `HandlerError` becomes
 * the WIT `handler-error`; any other exception a retry whose message names it
 * (a bug in the handler: retried like a trap, but the operator sees why). */
export function exportsFor(plugin) {
  return {
    describe() {
      return { name: plugin.name, version: plugin.version, subscriptions: plugin.subscriptions, retry: plugin.retry };
    },
    handle(event) {
      try {
        plugin.call(new Event(event), new Context(witHost));
      } catch (err) {
        if (err instanceof HandlerError) throw { tag: err.kind, val: err.message };
        throw { tag: 'retry', val: `unhandled ${err && err.name ? err.name : 'exception'}: ${message(err)}` };
      }
    },
  };
}
