// __NAME__: an evhost plugin in JavaScript.
//
// Handles `__NAME__.requested` events: counts them in state, emits
// `__NAME__.done`, and rejects an event without an `item` (it goes to the
// dead-letter store with this plugin's message).
import { OutgoingEvent, Plugin, Reject } from './evhost-sdk/index.js';

export const plugin = new Plugin({
  name: '__NAME__',
  version: '0.1.0',
  subscribe: [['__NAME__-events', '__NAME__.requested']],
  // A `Retry` (or an unexpected exception) is tried 3 times in all, then parked.
  retry: { maxAttempts: 3 },
});

plugin.handler((event, cx) => {
  const data = event.json();
  const item = data && typeof data === 'object' ? data.item : null;
  if (!item) throw new Reject(`${event.type} ${event.id} has no item`);
  // State needs `state = true` and emitting needs the type under `emit`, in
  // the operator's sidecar (__NAME__.toml).
  const count = cx.stateGet('handled', 0) + 1;
  cx.stateSet('handled', count);
  cx.info('handled', { id: event.id, count });
  cx.emit(new OutgoingEvent('__NAME__.done').withSubject(event.subject ?? item).withJson({ item, count }));
});
