// greeter-js: the JavaScript example plugin. Greets each new user once,
// counts the greetings in state, and rejects a user without a name.
import { OutgoingEvent, Plugin, Reject } from '../../plugin-sdk/js/index.js';

export const plugin = new Plugin({ name: 'greeter-js', version: '0.1.0', subscribe: [['user-events', 'user.created']] });

plugin.handler((event, cx) => {
  const user = event.json();
  const name = user && typeof user === 'object' ? user.name : null;
  if (!name) throw new Reject(`user.created ${event.id} has no name: ${event.text()}`);
  cx.once(event, (cx) => {
    const count = cx.stateGet('greeted', 0) + 1;
    cx.stateSet('greeted', count);
    const greeting = cx.config('greeting', 'Hello');
    cx.emit(
      new OutgoingEvent('greeting.sent')
        .withSubject(event.subject ?? name)
        .withJson({ text: `${greeting}, ${name}!`, count, lang: 'javascript' }),
    );
  });
});
