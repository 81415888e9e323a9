import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { TestHost, makeEvent } from '../../plugin-sdk/js/testing.js';
import { plugin } from './app.js';

const SIDECAR = fileURLToPath(new URL('./greeter-js.toml', import.meta.url));

test('a new user is greeted once', () => {
  const host = TestHost.fromSidecar(plugin, SIDECAR, { config: { greeting: 'Hej' } });
  const event = makeEvent('user.created', { data: { name: 'Ada' }, subject: 'u-1' });
  assert.equal(host.deliver(event), null);
  assert.equal(host.deliver(event), null); // a second copy is skipped
  assert.equal(host.emitted.length, 1);
  const [greeting] = host.emitted;
  assert.equal(greeting.type, 'greeting.sent');
  assert.equal(greeting.subject, 'u-1');
  assert.deepEqual(greeting.json(), { text: 'Hej, Ada!', count: 1, lang: 'javascript' });
  assert.equal(host.stateJson('greeted'), 1);
});

test('a user without a name is rejected', () => {
  const host = TestHost.fromSidecar(plugin, SIDECAR);
  const err = host.deliver(makeEvent('user.created', { data: { email: 'x@y.z' }, id: 'e-1' }));
  assert.equal(err.kind, 'reject');
  assert.equal(err.message, 'user.created e-1 has no name: {"email":"x@y.z"}');
  assert.equal(host.emitted.length, 0);
});

test('without the state grant the call is rejected', () => {
  const sidecar = join(mkdtempSync(join(tmpdir(), 'greeter-js-')), 'greeter-js.toml');
  writeFileSync(sidecar, '[grants]\nemit = ["greeting.sent"]\n');
  const err = TestHost.fromSidecar(plugin, sidecar).deliver(makeEvent('user.created', { data: { name: 'Ada' } }));
  assert.equal(err.kind, 'reject');
  assert.match(err.message, /has no `state` grant/);
});
