"""SyncService: background syncing and its callbacks, through a real server."""

import threading
import time

import pytest

import starsync
from conftest import wait_until


def statuses(rec):
    return rec.of("status")


def test_service_syncs_local_writes_and_reports_on_its_own_thread(server, make_node, recorder):
    a = make_node("A")
    b = make_node("B")
    with starsync.SyncService(a, interval=300, **recorder.callbacks()) as service:
        recorder.wait(lambda r: "online" in statuses(r), what="first sync")
        assert statuses(recorder)[:2] == ["syncing", "online"]
        assert service.status == "online" and service.running

        # A local write is synced at once (the interval is five minutes).
        uuid = a.create("Memo", {"text": "from A"})
        recorder.wait(lambda r: any(c["sent"] == 1 for c in r.of("completed")), what="the write")
        assert server.entity("Memo", uuid)[0] == 200

        # B's change reaches A on sync_now(); on_data_changed names the type.
        other = b.create("Memo", {"text": "from B"})
        b.sync()
        service.sync_now()
        recorder.wait(lambda r: ["Memo"] in r.of("data"), what="on_data_changed")
        assert a.get("Memo", other)["data"] == {"text": "from B"}
    assert not service.running
    # Callbacks ran on the service's thread, never on this one.
    assert recorder.threads and threading.get_ident() not in recorder.threads


def test_a_conflict_is_reported_through_on_conflict_detected(server, make_node, recorder):
    a = make_node("A")
    b = make_node("B")
    uuid = a.create("Estimate", {"name": "Roof", "value": 150})
    a.sync()
    b.sync()
    a.put("Estimate", uuid, {"name": "Roof", "value": 175})
    a.sync()

    service = starsync.SyncService(b, interval=300, start=False)
    service.on_conflict_detected = recorder.callback("conflict")
    service.on_sync_completed = recorder.callback("completed")
    service.start()
    try:
        # B edits the version it had; the server (server_wins) keeps A's and tells B.
        b.put("Estimate", uuid, {"name": "Roof", "value": 999})
        recorder.wait(lambda r: r.of("conflict"), what="on_conflict_detected")
        conflict = recorder.of("conflict")[0]
        assert conflict["entity_uuid"] == uuid and conflict["entity_type"] == "Estimate"
        assert conflict["conflict_resolution"] == "server_wins:server"
        assert conflict["node_lost"] is True
        assert conflict["local_data"] == {"name": "Roof", "value": 999}
        assert [c["conflict_id"] for c in b.conflicts()] == [conflict["conflict_id"]]
        # The winning state comes back to B.
        service.sync_now()
        wait_until(lambda: b.get("Estimate", uuid)["data"]["value"] == 175, what="A's value on B")
    finally:
        service.stop()


def test_server_down_then_up_goes_offline_then_online_and_loses_nothing(
    server, make_node, recorder
):
    a = make_node("A")
    service = starsync.SyncService(
        a, interval=300, max_backoff=0.5, probe_interval=0.2, **recorder.callbacks()
    )
    try:
        recorder.wait(lambda r: "online" in statuses(r), what="online")
        server.stop()
        written = [a.create("Memo", {"n": 0})]
        recorder.wait(lambda r: "offline" in statuses(r) and r.of("failed"), what="offline")
        assert any("unreachable" in m for m in recorder.of("failed")), recorder.of("failed")
        written += [a.create("Memo", {"n": i}) for i in range(1, 4)]
        a.put("Memo", written[0], {"n": 0, "edited": True})
        assert service.status in ("offline", "syncing")

        server.start()  # same port, same database
        recorder.wait(lambda r: statuses(r)[-1] == "online", what="online again")
        seen = statuses(recorder)
        assert seen.index("offline") < len(seen) - 1 and seen[-1] == "online", seen
        wait_until(lambda: a.status()["pending"] + a.status()["in_flight"] == 0, what="outbox empty")
    finally:
        service.stop()
    for u in written:
        status, body = server.entity("Memo", u)
        assert status == 200, (u, body)
    assert server.entity("Memo", written[0])[1]["data"] == {"n": 0, "edited": True}
    assert a.status()["failed"] == 0


def test_sync_now_does_not_wait_for_the_backoff(server, make_node, recorder):
    a = make_node("A")
    # Without sync_now, the next attempt after four failures waits 8 s (1, 2, 4, 8...), and
    # the probe (an hour) never comes.
    service = starsync.SyncService(
        a, interval=3600, max_backoff=3600, probe_interval=3600, **recorder.callbacks()
    )
    try:
        recorder.wait(lambda r: "online" in statuses(r), what="online")
        server.stop()
        a.create("Memo", {"n": 1})
        recorder.wait(lambda r: len(r.of("failed")) >= 4, timeout=30, what="four failures")
        server.start()
        completed = len(recorder.of("completed"))
        asked = time.monotonic()
        service.sync_now()
        recorder.wait(lambda r: len(r.of("completed")) > completed, timeout=10, what="a sync")
        assert time.monotonic() - asked < 4, "synced by sync_now, not by the 8 s backoff"
        assert recorder.of("completed")[-1]["sent"] == 1
        assert statuses(recorder)[-1] == "online"
    finally:
        service.stop()


def test_callbacks_may_call_back_into_the_node_and_the_service(server, make_node):
    """Every callback reads, writes and syncs the node and touches the service: none of
    that may deadlock (no Rust lock is held while a callback runs)."""
    a = make_node("A")
    done = threading.Event()
    calls = []
    errors = []
    service = None

    def reenter(name):
        def callback(arg):
            try:
                calls.append(name)
                a.status()
                a.list("Memo")
                a.conflicts()
                if name == "status" and arg == "syncing" and "nested" not in calls:
                    # Waits for the service's own sync to end, then syncs itself.
                    calls.append("nested")
                    a.sync()
                if name == "completed" and calls.count("completed") == 1:
                    a.create("Memo", {"text": "written by a callback"})  # triggers a sync
                    service.sync_now()
                    service.on_sync_failed = service.on_sync_failed  # the callback table
                if name == "completed" and calls.count("completed") >= 3:
                    service.stop()  # from the service's own thread
                    done.set()
            except BaseException as e:  # reported below, not swallowed by the service
                errors.append(e)
                done.set()

        return callback

    service = starsync.SyncService(
        a,
        interval=300,
        on_status_changed=reenter("status"),
        on_sync_completed=reenter("completed"),
        on_sync_failed=reenter("failed"),
        on_data_changed=reenter("data"),
        start=False,
    )
    service.start()
    # Meanwhile this thread writes too.
    for i in range(20):
        a.create("Memo", {"n": i})
    assert done.wait(60), f"deadlock? calls so far: {calls}"
    assert not errors, errors
    wait_until(lambda: not service.running, what="stopped")
    service.stop()  # again, from here: harmless
    assert not a.sync()["cancelled"], "the service's stop request does not outlive it"


def test_no_callback_after_stop_and_a_failing_callback_does_not_stop_the_service(
    server, make_node, recorder, monkeypatch
):
    unraisable = []
    monkeypatch.setattr("sys.unraisablehook", lambda u: unraisable.append(u.exc_value))
    a = make_node("A")

    def broken(report):
        raise RuntimeError("a bug in the app's callback")

    service = starsync.SyncService(a, interval=300, on_sync_completed=broken,
                                   on_status_changed=recorder.callback("status"))
    try:
        wait_until(lambda: unraisable, what="the callback's exception to be reported")
        assert isinstance(unraisable[0], RuntimeError)
        # The service goes on: the next write is synced.
        uuid = a.create("Memo", {"text": "still syncing"})
        wait_until(lambda: server.entity("Memo", uuid)[0] == 200, what="the next sync")
    finally:
        service.stop()
    seen = len(recorder.events)
    a.create("Memo", {"text": "after stop"})
    a.sync()
    time.sleep(0.3)
    assert len(recorder.events) == seen, "no callback runs after stop() returned"

    with pytest.raises(TypeError):
        service.on_sync_failed = "not callable"
    with pytest.raises(starsync.InvalidInput):
        starsync.SyncService(a, interval=0)
    # Restartable.
    service.start()
    recorder.wait(lambda r: len(r.events) > seen, what="callbacks after a restart")
    service.stop()
