from pathlib import Path

from evhost_sdk.testing import TestHost, make_event

from app import plugin

# The test host enforces the grants of the sidecar the operator deploys.
SIDECAR = Path(__file__).with_name("__NAME__.toml")


def test_emits_done_and_counts():
    host = TestHost(plugin, sidecar=SIDECAR)
    assert host.deliver(make_event("__NAME__.requested", {"item": "book"})) is None
    assert host.deliver(make_event("__NAME__.requested", {"item": "pen"})) is None
    assert [e.json() for e in host.emitted] == [{"item": "book", "count": 1}, {"item": "pen", "count": 2}]
    assert host.state_json("handled") == 2


def test_rejects_an_event_without_an_item():
    host = TestHost(plugin, sidecar=SIDECAR)
    err = host.deliver(make_event("__NAME__.requested", {}, id="e-1"))
    assert err.kind == "reject" and err.message == "__NAME__.requested e-1 has no item"
    assert host.emitted == []
