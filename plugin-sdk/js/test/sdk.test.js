// The JS SDK's own tests: run by `cargo xtask test` (node --test).
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { EmitRefused, OutgoingEvent, Plugin, Reject, Retry, StateFailed, checkName, topicForType } from '../index.js';
import { TestHost, globRegex, makeEvent } from '../testing.js';
import { utf8Decode, utf8Encode } from '../utf8.js';

const counter = new Plugin({ name: 'counter-js', subscribe: [['user-events', 'user.*']] });
counter.handler((event, cx) => {
  cx.setDedupeWindow(3);
  cx.once(event, (cx) => cx.stateSet('n', cx.stateGet('n', 0) + 1));
});

const text = (bytes) => utf8Decode(bytes);

test('idempotency keys match the Rust SDK layout byte for byte', () => {
  // The same scenario and expectation as plugin-sdk/src/idempotency.rs's
  // `the_state_key_layout_is_fixed` and the Python SDK's test.
  const host = new TestHost(counter);
  for (let i = 0; i < 5; i++) assert.equal(host.deliver(makeEvent('user.created', { id: `e${i}` })), null);
  const layout = host.stateKeys().map((k) => [k, text(host.state.get(k))]);
  assert.deepEqual(layout, [
    ['__evhost/handled/id/e2', '3'],
    ['__evhost/handled/id/e3', '4'],
    ['__evhost/handled/id/e4', '5'],
    ['__evhost/handled/seq', '5'],
    ['__evhost/handled/slot/0', 'e2'],
    ['__evhost/handled/slot/1', 'e3'],
    ['__evhost/handled/slot/2', 'e4'],
    ['n', '5'],
  ]);
  host.deliver(makeEvent('user.created', { id: 'e4' })); // remembered
  assert.equal(host.stateJson('n'), 5);
  host.deliver(makeEvent('user.created', { id: 'e0' })); // forgotten
  assert.equal(host.stateJson('n'), 6);
});

test('effects commit only on success', () => {
  const p = new Plugin({ name: 'fails-late' });
  p.handler((event, cx) => {
    cx.stateSet('written', true);
    cx.emit(new OutgoingEvent('a.done'));
    if (event.type === 'a.bad') throw new Retry('not yet');
  });
  const host = new TestHost(p);
  const err = host.deliver(makeEvent('a.bad'));
  assert.equal(err.kind, 'retry');
  assert.equal(String(err), 'retry: not yet');
  assert.deepEqual([host.emitted.length, host.state.size], [0, 0]);
  assert.equal(host.deliver(makeEvent('a.good')), null);
  assert.deepEqual(host.emitted.map((e) => e.type), ['a.done']);
  assert.equal(host.stateJson('written'), true);
});

test('emitted events get the daemon defaults', () => {
  const p = new Plugin({ name: 'greeter' });
  p.handler((event, cx) => {
    cx.emit(new OutgoingEvent('mail.requested').withSubject('a@b.c').withJson({ to: 'a@b.c', text: 'Grüß' }));
  });
  const host = new TestHost(p);
  const handled = makeEvent('user.created', { data: { email: 'a@b.c' }, actor: 'alice' });
  host.deliver(handled);
  const [out] = host.emitted;
  assert.equal(out.source, 'evhost://plugin/greeter');
  assert.equal(out.topic, 'mail-events');
  assert.equal(out.causationid, handled.id);
  assert.equal(out.correlationid, handled.correlationid);
  assert.equal(out.actor, 'alice');
  assert.deepEqual(out.json(), { to: 'a@b.c', text: 'Grüß' });
});

const GREETER = `
[grants]
emit = ["greeting.{sent,queued}"]
state = true
[config]
greeting = "Hej"
times = 3
loud = true
`;

function sidecar(text, name = 'greeter.toml') {
  const path = join(mkdtempSync(join(tmpdir(), 'evhost-js-sdk-')), name);
  if (text !== null) writeFileSync(path, text);
  return path;
}

test('a sidecar grants and configures', () => {
  const p = new Plugin({ name: 'greeter' });
  p.handler((event, cx) => {
    cx.stateSet('seen', cx.config('greeting'));
    assert.equal(cx.configBool('loud', false), true);
    cx.emit(new OutgoingEvent('greeting.sent').withJson({ n: cx.configInt('times', 1) }));
  });
  const host = TestHost.fromSidecar(p, sidecar(GREETER));
  assert.equal(host.deliver(makeEvent('user.created')), null);
  assert.equal(host.stateJson('seen'), 'Hej');
  assert.deepEqual(host.emitted[0].json(), { n: 3 });
});

test('an emit outside the grant rejects the call even when swallowed', () => {
  const path = sidecar(GREETER);
  const p = new Plugin({ name: 'greeter' });
  p.handler((event, cx) => {
    cx.stateSet('k', 1);
    try {
      cx.emit(new OutgoingEvent('mail.requested'));
    } catch (err) {
      assert.ok(err instanceof EmitRefused); // the daemon rejects the call anyway
    }
  });
  const host = TestHost.fromSidecar(p, path);
  const err = host.deliver(makeEvent('user.created'));
  assert.ok(err instanceof Reject);
  assert.equal(
    err.message,
    `plugin \`greeter\` may not emit type \`mail.requested\`: its \`emit\` grant allows greeting.{sent,queued}; add "mail.requested" (or a pattern matching it) to emit under [grants] in ${path}`,
  );
  assert.deepEqual([host.emitted.length, host.state.size], [0, 0]);
});

test('state without the grant is refused naming the sidecar', () => {
  const missing = sidecar(null, 'counter-js.toml'); // no sidecar: nothing granted
  const err = TestHost.fromSidecar(counter, missing).deliver(makeEvent('user.created'));
  assert.equal(err.kind, 'reject');
  assert.equal(err.message, `plugin \`counter-js\` has no \`state\` grant; add "state = true" under [grants] in ${missing}`);
});

test('unknown sidecar keys are named', () => {
  assert.throws(() => TestHost.fromSidecar(counter, sidecar('[grants]\nemitt = []\n')), /grants\.emitt/);
  assert.throws(() => TestHost.fromSidecar(counter, sidecar('timeot = "1s"\n')), /timeot/);
});

test('SDK errors have the Rust SDK kinds', () => {
  assert.equal(new StateFailed('disk full').kind, 'retry');
  assert.equal(new EmitRefused('no').kind, 'reject');
  const p = new Plugin({ name: 'json-reader' });
  p.handler((event) => event.json());
  const err = new TestHost(p).deliver(makeEvent('a.b', { text: '{not json' }));
  assert.equal(err.kind, 'reject');
  assert.match(err.message, /decoding the data of event/);
  assert.equal(new TestHost(p).deliver(makeEvent('a.b')).message, 'the event has no data');
});

test('typed config rejects a bad value naming the key', () => {
  const p = new Plugin({ name: 'cfg' });
  p.handler((event, cx) => cx.configInt('limit', 1));
  const err = new TestHost(p, { config: { limit: 'lots' } }).deliver(makeEvent('a.b'));
  assert.equal(err.message, 'config `limit` must be an integer, got "lots"');
});

test('retries stop at the policy', () => {
  const p = new Plugin({ name: 'flaky' });
  p.handler((event) => {
    if (event.attempt < 3) throw new Retry('warming up');
  });
  assert.deepEqual(new TestHost(p).deliverWithRetries(makeEvent('a.b'), 5), { attempts: 3, result: null });
  const run = new TestHost(p).deliverWithRetries(makeEvent('a.b'), 2);
  assert.equal(run.attempts, 2);
  assert.equal(run.result.kind, 'retry');
});

test('globs follow the daemon syntax', () => {
  assert.ok(globRegex('order.*').test('order.created'));
  assert.ok(!globRegex('order.*').test('orders.created'));
  assert.ok(globRegex('*.failed').test('payment.failed'));
  assert.ok(globRegex('a.{b,c}').test('a.c') && !globRegex('a.{b,c}').test('a.d'));
  assert.ok(globRegex('v[0-9]').test('v7') && !globRegex('v[!0-9]').test('v7'));
});

test('the naming rule suggests a valid name', () => {
  assert.equal(checkName('invoice-ledger'), 'invoice-ledger');
  for (const bad of ['Invoice_Ledger', '-x', '', 'a'.repeat(65)]) assert.throws(() => checkName(bad), /lowercase letters/);
  assert.throws(() => new Plugin({ name: 'Invoice_Ledger' }), /try "invoice-ledger"/);
});

test('topicForType and UTF-8 without TextEncoder', () => {
  assert.equal(topicForType('user.created'), 'user-events');
  // The fallback the component uses (QuickJS has no TextEncoder) agrees with Node's.
  const saved = [globalThis.TextEncoder, globalThis.TextDecoder];
  const samples = ['', 'plain', 'Grüß 𝄞 ✓', '\u07ff\u0800\uffff'];
  const native = samples.map((s) => [...utf8Encode(s)]);
  globalThis.TextEncoder = undefined;
  globalThis.TextDecoder = undefined;
  try {
    samples.forEach((s, i) => {
      assert.deepEqual([...utf8Encode(s)], native[i]);
      assert.equal(utf8Decode(Uint8Array.from(native[i]), true), s);
    });
    assert.throws(() => utf8Decode(Uint8Array.from([0xc3]), true));
    assert.equal(utf8Decode(Uint8Array.from([0x61, 0xff])), 'a\ufffd');
  } finally {
    [globalThis.TextEncoder, globalThis.TextDecoder] = saved;
  }
});
