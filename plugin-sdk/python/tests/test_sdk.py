"""The Python SDK's own tests: run by `cargo xtask test` (pytest)."""

import pytest

from evhost_sdk import (
    EmitRefused,
    OutgoingEvent,
    Plugin,
    Reject,
    Retry,
    StateFailed,
    check_name,
    topic_for_type,
)
from evhost_sdk.testing import TestHost, glob_regex, make_event

counter = Plugin("counter-py", subscribe=[("user-events", "user.*")])


@counter.handler
def count(event, cx):
    cx.set_dedupe_window(3)

    def bump(cx):
        cx.state_set("n", cx.state_get("n", 0) + 1)

    cx.once(event, bump)


def test_idempotency_keys_match_the_rust_sdk_layout_byte_for_byte():
    # The same scenario and expectation as plugin-sdk/src/idempotency.rs's
    # `the_state_key_layout_is_fixed` and the JS SDK's test.
    host = TestHost(counter)
    for i in range(5):
        assert host.deliver(make_event("user.created", id=f"e{i}")) is None
    assert host.state == {
        "__evhost/handled/id/e2": b"3",
        "__evhost/handled/id/e3": b"4",
        "__evhost/handled/id/e4": b"5",
        "__evhost/handled/seq": b"5",
        "__evhost/handled/slot/0": b"e2",
        "__evhost/handled/slot/1": b"e3",
        "__evhost/handled/slot/2": b"e4",
        "n": b"5",
    }
    # e4 is remembered, e0 was forgotten.
    host.deliver(make_event("user.created", id="e4"))
    assert host.state_json("n") == 5
    host.deliver(make_event("user.created", id="e0"))
    assert host.state_json("n") == 6


def test_effects_commit_only_on_success():
    p = Plugin("fails-late")

    @p.handler
    def h(event, cx):
        cx.state_set("written", True)
        cx.emit(OutgoingEvent("a.done"))
        if event.type == "a.bad":
            raise Retry("not yet")

    host = TestHost(p)
    err = host.deliver(make_event("a.bad"))
    assert err == Retry("not yet") and str(err) == "retry: not yet"
    assert host.emitted == [] and host.state == {}
    assert host.deliver(make_event("a.good")) is None
    assert [e.type for e in host.emitted] == ["a.done"] and host.state_json("written") is True


def test_emitted_events_get_the_daemon_defaults():
    p = Plugin("greeter")

    @p.handler
    def h(event, cx):
        cx.emit(OutgoingEvent("mail.requested").subject("a@b.c").json({"to": "a@b.c"}))

    host = TestHost(p)
    handled = make_event("user.created", {"email": "a@b.c"}, actor="alice")
    host.deliver(handled)
    (out,) = host.emitted
    assert out.source == "evhost://plugin/greeter"
    assert out.topic == "mail-events" and out.offset == 0
    assert out.causationid == handled.id and out.correlationid == handled.correlationid
    assert out.actor == "alice" and out.json() == {"to": "a@b.c"}
    assert out.data == b'{"to":"a@b.c"}'


GREETER = """
[grants]
emit = ["greeting.{sent,queued}"]
state = true
[config]
greeting = "Hej"
times = 3
loud = true
"""


def sidecar(tmp_path, text, name="greeter.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_sidecar_grants_and_configures(tmp_path):
    p = Plugin("greeter")

    @p.handler
    def h(event, cx):
        cx.state_set("seen", cx.config("greeting"))
        n = cx.config_int("times", 1)
        assert cx.config_bool("loud", False) is True
        cx.emit(OutgoingEvent("greeting.sent").json({"n": n}))

    host = TestHost(p, sidecar=sidecar(tmp_path, GREETER))
    assert host.deliver(make_event("user.created")) is None
    assert host.state_json("seen") == "Hej" and host.emitted[0].json() == {"n": 3}


def test_an_emit_outside_the_grant_rejects_the_call_even_when_swallowed(tmp_path):
    path = sidecar(tmp_path, GREETER)
    p = Plugin("greeter")

    @p.handler
    def h(event, cx):
        cx.state_set("k", 1)
        try:
            cx.emit(OutgoingEvent("mail.requested"))
        except EmitRefused:
            pass  # the daemon rejects the call anyway

    host = TestHost(p, sidecar=path)
    err = host.deliver(make_event("user.created"))
    assert isinstance(err, Reject) and err.kind == "reject"
    assert err.message == (
        "plugin `greeter` may not emit type `mail.requested`: its `emit` grant allows "
        f'greeting.{{sent,queued}}; add "mail.requested" (or a pattern matching it) to emit under [grants] in {path}'
    )
    assert host.state == {} and host.emitted == []


def test_state_without_the_grant_is_refused_naming_the_sidecar(tmp_path):
    missing = tmp_path / "counter-py.toml"  # no sidecar: nothing granted
    host = TestHost(counter, sidecar=missing)
    err = host.deliver(make_event("user.created"))
    assert err.kind == "reject"
    assert err.message == (
        f'plugin `counter-py` has no `state` grant; add "state = true" under [grants] in {missing}'
    )


def test_unknown_sidecar_keys_are_named(tmp_path):
    with pytest.raises(ValueError, match="grants.emitt"):
        TestHost(counter, sidecar=sidecar(tmp_path, "[grants]\nemitt = []\n"))
    with pytest.raises(ValueError, match="timeot"):
        TestHost(counter, sidecar=sidecar(tmp_path, 'timeot = "1s"\n'))


def test_sdk_errors_have_the_rust_sdk_kinds():
    assert StateFailed("disk full").kind == "retry" and isinstance(StateFailed("x"), Retry)
    assert EmitRefused("no").kind == "reject" and isinstance(EmitRefused("x"), Reject)
    p = Plugin("json-reader")

    @p.handler
    def h(event, cx):
        event.json()

    err = TestHost(p).deliver(make_event("a.b", text="{not json"))
    assert err.kind == "reject" and "decoding the data of event" in err.message
    err = TestHost(p).deliver(make_event("a.b"))
    assert err == Reject("the event has no data")


def test_typed_config_rejects_a_bad_value_naming_the_key():
    p = Plugin("cfg")

    @p.handler
    def h(event, cx):
        cx.config_int("limit", 1)

    err = TestHost(p, config={"limit": "lots"}).deliver(make_event("a.b"))
    assert err == Reject("config `limit` must be an integer, got 'lots'")


def test_retries_stop_at_the_policy():
    p = Plugin("flaky")

    @p.handler
    def h(event, cx):
        if event.attempt < 3:
            raise Retry("warming up")

    assert TestHost(p).deliver_with_retries(make_event("a.b"), 5) == (3, None)
    attempts, err = TestHost(p).deliver_with_retries(make_event("a.b"), 2)
    assert attempts == 2 and err.kind == "retry"


def test_globs_follow_the_daemon_syntax():
    assert glob_regex("order.*").match("order.created")
    assert not glob_regex("order.*").match("orders.created")
    assert glob_regex("*.failed").match("payment.failed")
    assert glob_regex("a.{b,c}").match("a.c") and not glob_regex("a.{b,c}").match("a.d")
    assert glob_regex("v[0-9]").match("v7") and not glob_regex("v[!0-9]").match("v7")


def test_the_naming_rule_suggests_a_valid_name():
    assert check_name("invoice-ledger") == "invoice-ledger"
    for bad in ["Invoice_Ledger", "-x", "", "a" * 65, "über"]:
        with pytest.raises(ValueError, match="lowercase letters"):
            check_name(bad)
    with pytest.raises(ValueError, match="try 'invoice-ledger'"):
        Plugin("Invoice_Ledger")


def test_topic_for_type():
    assert topic_for_type("user.created") == "user-events"
    assert topic_for_type("ping") == "ping-events"
