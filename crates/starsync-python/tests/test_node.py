"""The Node API through a real server: two Python nodes and a `starsync-node` CLI node."""

import json
import socket
import threading
import time

import pytest

import starsync
from conftest import ADMIN

# Values JSON can hold that a float would round: they must arrive exactly on every node.
EXACT = {
    "i64_max": 2**63 - 1,
    "i64_min": -(2**63),
    "u64_max": 2**64 - 1,
    "tenth": 0.1,
    "text": "Dachsanierung – €, 日本",
    "flags": [True, False, None],
    "nested": {"list": [1, "two", {"three": 3.5}], "empty": {}},
}


def test_python_and_cli_nodes_share_creates_edits_and_deletes(make_node, cli_node):
    a = make_node("A")
    b = make_node("B")
    c = cli_node("C")

    # Python A creates; Python B and the CLI node receive it, numbers exact.
    uuid = a.create("Estimate", dict(EXACT, name="Roof"))
    assert a.get("Estimate", uuid)["sync_state"] == "pending"
    assert a.sync()["sent"] == 1
    assert a.get("Estimate", uuid)["sync_state"] == "synced"
    b.sync()
    c.run("sync")
    assert b.get("Estimate", uuid)["data"] == dict(EXACT, name="Roof")
    assert c.data("Estimate", uuid) == dict(EXACT, name="Roof")
    got = b.get("Estimate", uuid)["data"]
    assert type(got["i64_max"]) is int and type(got["tenth"]) is float
    assert got["flags"][0] is True

    # The CLI node edits; both Python nodes see the edit.
    c.run("put", "Estimate", uuid, json.dumps({"name": "Roof", "value": 175}))
    c.run("sync")
    a.sync()
    b.sync()
    assert a.get("Estimate", uuid)["data"] == {"name": "Roof", "value": 175}
    assert b.get("Estimate", uuid)["data"] == {"name": "Roof", "value": 175}

    # Python B edits; A and the CLI node see it.
    b.put("Estimate", uuid, {"name": "Roof", "value": 200})
    b.sync()
    a.sync()
    c.run("sync")
    assert a.get("Estimate", uuid)["data"]["value"] == 200
    assert c.data("Estimate", uuid)["value"] == 200

    # The CLI node creates; the Python nodes list it.
    made = c.run("create", "Estimate", json.dumps({"name": "Gutter"}))
    c.run("sync")
    a.sync()
    b.sync()
    for n in (a, b):
        assert sorted(e["data"]["name"] for e in n.list("Estimate")) == ["Gutter", "Roof"]

    # Deletes both ways: Python A deletes Roof, the CLI node deletes Gutter.
    assert a.delete("Estimate", uuid)["operation"] == "DELETE"
    assert a.delete("Estimate", uuid) is None, "deleting twice queues nothing"
    a.sync()
    c.run("delete", "Estimate", made["uuid"])
    c.run("sync")
    a.sync()
    b.sync()
    c.run("sync")
    assert a.list("Estimate") == [] and b.list("Estimate") == []
    assert c.run("list", "Estimate") == []
    gone = b.get("Estimate", uuid)
    assert gone["deleted"] is True
    assert len(b.list("Estimate", include_deleted=True)) == 2
    for n in (a, b):
        st = n.status()
        assert (st["pending"], st["in_flight"], st["failed"]) == (0, 0, 0), st


def test_data_python_cannot_send_as_json_is_refused_before_anything_is_queued(make_node):
    a = make_node("A")
    bad = [
        {"n": 2**64},  # an int JSON exchange cannot keep exact
        {"n": -(2**63) - 1},
        {"x": float("nan")},
        {"x": float("inf")},
        {1: "key not a string"},
        {"s": {1, 2}},
        {"deep": {"b": b"bytes"}},
        ["not", "an", "object"],
        "text",
    ]
    for data in bad:
        with pytest.raises(starsync.InvalidInput) as e:
            a.create("Estimate", data)
        assert isinstance(e.value, ValueError)
    with pytest.raises(starsync.InvalidInput, match=r'data\["deep"\]\["b"\]'):
        a.create("Estimate", {"deep": {"b": b"bytes"}})
    loop = []
    loop.append(loop)
    with pytest.raises(starsync.InvalidInput, match="nested more than"):
        a.create("Estimate", {"loop": loop})
    with pytest.raises(starsync.InvalidInput):
        a.put("Estimate", "not/an-id", {"n": 1})
    with pytest.raises(starsync.InvalidInput):
        a.put("no spaces allowed", "0b0e8c6e-8d36-4f0c-9a58-3f0f4b1b3a11", {"n": 1})
    assert a.status()["pending"] == 0, "nothing half-applied"
    # Tuples are lists, bools stay bools (not 1 and 0).
    uuid = a.create("Estimate", {"t": (1, 2), "b": True})
    data = a.get("Estimate", uuid)["data"]
    assert data == {"t": [1, 2], "b": True} and data["b"] is True


def test_errors_are_typed_python_exceptions(tmp_path, server, make_node):
    with pytest.raises(starsync.NotInitialized) as e:
        starsync.Node.open(tmp_path / "empty")
    assert isinstance(e.value, starsync.ConfigError)
    assert e.value.data_dir == str(tmp_path / "empty")

    a = make_node("A")
    with pytest.raises(starsync.AlreadyInitialized) as e:
        starsync.Node.init(a.data_dir, server.base, "A2", admin_token=ADMIN)
    assert e.value.node_code == "A"

    with pytest.raises(starsync.Rejected) as e:
        starsync.Node.init(tmp_path / "x", server.base, "X", admin_token="wrong-token")
    assert (e.value.code, e.value.status) == ("unauthorized", 401)
    assert not e.value.retryable

    with pytest.raises(starsync.Rejected) as e:
        starsync.Node.init(tmp_path / "y", server.base, "A", admin_token=ADMIN)
    assert e.value.code == "code_taken", e.value

    # The server refuses a packet of another schema major version.
    b = make_node("B")
    b.set_setting("schema_version", "2.0.0")
    b.create("Estimate", {"n": 1})
    with pytest.raises(starsync.Rejected) as e:
        b.sync()
    assert e.value.code == "schema_mismatch", e.value
    assert e.value.status == 409
    assert b.status()["in_flight"] == 1, "kept, not dropped"

    server.stop()
    a.create("Estimate", {"n": 1})
    with pytest.raises(starsync.Unreachable) as e:
        a.sync()
    assert e.value.retryable and e.value.url == server.base
    assert a.status()["in_flight"] + a.status()["pending"] == 1, "nothing lost"
    with pytest.raises(starsync.Unreachable):
        starsync.Node.init(tmp_path / "z", server.base, "Z", admin_token=ADMIN)

    with pytest.raises(starsync.NotFound) as e:
        a.retry_failed(12345)
    assert isinstance(e.value, LookupError)
    with pytest.raises(starsync.NotFound):
        a.import_packets(tmp_path / "nothing-here")
    with pytest.raises(starsync.InvalidInput):
        a.set_setting("colour", "blue")
    assert a.set_setting("max_retries", 2)["max_retries"] == 2
    for cls in (starsync.Unreachable, starsync.Rejected, starsync.ConfigError,
                starsync.NotFound, starsync.InvalidInput):
        assert issubclass(cls, starsync.StarsyncError)


def test_offline_export_and_import_through_the_server_cli(tmp_path, server, make_node):
    a = make_node("A", batch_size=2)
    b = make_node("B")
    uuids = [a.create("Memo", {"n": i, "text": f"memo {i}"}) for i in range(3)]
    a.put("Memo", uuids[0], {"n": 0, "text": "edited"})

    to_server = tmp_path / "to-server"
    exported = a.export_packets(to_server)
    names = sorted(p.name for p in to_server.iterdir())
    assert names == ["A-to-server-00000001.syncpkt", "A-to-server-00000002.syncpkt"]
    assert sum(f["changes"] for f in exported["files"]) == 3
    server.cli("import", str(to_server))
    for u in uuids:
        assert server.entity("Memo", u)[0] == 200

    to_b = tmp_path / "to-b"
    server.cli("export", "--node", "B", "--out", str(to_b))
    imported = b.import_packets(to_b)
    assert imported["received"] == 3
    assert [e["data"] for e in b.list("Memo")] == [e["data"] for e in a.list("Memo")]
    assert b.get("Memo", uuids[0])["data"]["text"] == "edited"
    again = b.import_packets([str(p) for p in to_b.iterdir()])
    assert all(f["skipped"] for f in again["files"])
    for n in (a, b):
        assert n.status()["last_attempt_at"] is None, "no HTTP exchange"
    assert b.status()["last_import_at"] is not None


def test_the_gil_is_released_while_a_node_waits_for_the_network(tmp_path, make_node):
    # A server that accepts connections and never answers: the sync waits `packet_timeout`.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    try:
        a = make_node("A", packet_timeout=1)
        a.set_setting("server_url", f"http://127.0.0.1:{hole.getsockname()[1]}")
        a.create("Memo", {"text": "waits"})
        outcome = []

        def sync() -> None:
            try:
                a.sync()
            except starsync.StarsyncError as e:
                outcome.append(e)

        t = threading.Thread(target=sync)
        started = time.monotonic()
        t.start()
        ticks = 0
        while t.is_alive():
            time.sleep(0.01)
            ticks += 1
        waited = time.monotonic() - started
        assert isinstance(outcome[0], starsync.Unreachable), outcome
        assert waited >= 0.9
        # Holding the GIL for the whole wait would have frozen this thread (a handful of
        # ticks); released, it ticks about every 10 ms.
        assert ticks >= waited * 10, f"{ticks} ticks in {waited:.2f}s"
    finally:
        hole.close()
