from pathlib import Path

from evhost_sdk.testing import TestHost, make_event

from app import plugin

SIDECAR = Path(__file__).with_name("greeter-py.toml")


def test_a_new_user_is_greeted_once():
    host = TestHost(plugin, sidecar=SIDECAR, config={"greeting": "Hej"})
    event = make_event("user.created", {"name": "Ada"}, subject="u-1")
    assert host.deliver(event) is None
    assert host.deliver(event) is None  # a second copy is skipped
    (greeting,) = host.emitted
    assert greeting.type == "greeting.sent" and greeting.subject == "u-1"
    assert greeting.json() == {"text": "Hej, Ada!", "count": 1, "lang": "python"}
    assert host.state_json("greeted") == 1


def test_a_user_without_a_name_is_rejected():
    host = TestHost(plugin, sidecar=SIDECAR)
    err = host.deliver(make_event("user.created", {"email": "x@y.z"}, id="e-1"))
    assert err.kind == "reject"
    assert err.message == 'user.created e-1 has no name: {"email":"x@y.z"}'
    assert host.emitted == []


def test_without_the_state_grant_the_call_is_rejected(tmp_path):
    sidecar = tmp_path / "greeter-py.toml"
    sidecar.write_text('[grants]\nemit = ["greeting.sent"]\n')
    err = TestHost(plugin, sidecar=sidecar).deliver(make_event("user.created", {"name": "Ada"}))
    assert err.kind == "reject" and "has no `state` grant" in err.message
