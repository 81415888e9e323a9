import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { TestHost, makeEvent } from './evhost-sdk/testing.js';
import { plugin } from './app.js';

// The test host enforces the grants of the sidecar the operator deploys.
const SIDECAR = fileURLToPath(new URL('./__NAME__.toml', import.meta.url));

test('emits done and counts', () => {
  const host = TestHost.fromSidecar(plugin, SIDECAR);
  assert.equal(host.deliver(makeEvent('__NAME__.requested', { data: { item: 'book' } })), null);
  assert.equal(host.deliver(makeEvent('__NAME__.requested', { data: { item: 'pen' } })), null);
  assert.deepEqual(host.emitted.map((e) => e.json()), [{ item: 'book', count: 1 }, { item: 'pen', count: 2 }]);
  assert.equal(host.stateJson('handled'), 2);
});

test('rejects an event without an item', () => {
  const host = TestHost.fromSidecar(plugin, SIDECAR);
  const err = host.deliver(makeEvent('__NAME__.requested', { data: {}, id: 'e-1' }));
  assert.equal(err.kind, 'reject');
  assert.equal(err.message, '__NAME__.requested e-1 has no item');
  assert.equal(host.emitted.length, 0);
});
