// Write evhost event handlers in JavaScript.
//
// A project's `app.js` exports `plugin`, a `Plugin` with a handler; the
// build (`evhost build`) generates the component's entry module, which
// wires it to the WIT imports (see `wasm.js`), and runs componentize-js. The
// same handler runs under plain `node --test` through `testing.js`.
//
// Layout: errors.js (Retry, Reject, SDK failures), event.js (Event,
// OutgoingEvent, topicForType), context.js (Context: emit, state, config,
// log, once), plugin.js (Plugin, checkName), testing.js (the native test
// host), wasm.js (the glue to the WIT imports; only loads inside a component).
export { EmitRefused, HandlerError, JsonError, MissingData, Reject, Retry, StateFailed } from './errors.js';
export { Event, OutgoingEvent, encodeJson, topicForType } from './event.js';
export { Context, DEFAULT_DEDUPE_WINDOW, LEVELS, RESERVED_PREFIX } from './context.js';
export { DEFAULT_RETRY, Plugin, checkName } from './plugin.js';
