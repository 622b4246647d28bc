"""Fixtures: a real `starsync serve` process per test, Python nodes, `starsync-node` CLI nodes.

The binaries come from the environment (run-tests.sh sets both after `cargo build`):
STARSYNC_BIN (the server) and STARSYNC_NODE_BIN (the node CLI).
"""

import faulthandler
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

import starsync

ADMIN = "test-admin-token-0123456789abcdef"
#: Longest a test may take before its threads' stacks are dumped and the run ends (a deadlock
#: must fail CI, not hang it).
TEST_TIMEOUT = float(os.environ.get("STARSYNC_PYTEST_TIMEOUT", "120"))


def _binary(var: str) -> str:
    path = os.environ.get(var)
    if not path or not Path(path).is_file():
        pytest.exit(
            f"{var} must name the built binary (run crates/starsync-python/run-tests.sh)",
            returncode=2,
        )
    return path


#: Where the stacks of a hung run go: pytest captures this process's stderr, and a deadlock
#: that holds the GIL leaves pytest no chance to print it (run-tests.sh prints this file).
HANG_LOG = os.environ.get("STARSYNC_PYTEST_HANG_LOG")


@pytest.fixture(autouse=True)
def _deadlock_guard(request):
    log = open(HANG_LOG, "a") if HANG_LOG else sys.__stderr__
    if HANG_LOG:
        log.write(f"{request.node.nodeid} hung for {TEST_TIMEOUT:.0f}s:\n")
        log.flush()
    faulthandler.dump_traceback_later(TEST_TIMEOUT, exit=True, file=log)
    yield
    faulthandler.cancel_dump_traceback_later()
    if HANG_LOG:
        log.close()
        os.truncate(HANG_LOG, 0)


def wait_until(pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Server:
    """`starsync serve` in its own directory and SQLite database; stop() and start() again
    keep the database and the port (a server that goes down and comes back)."""

    def __init__(self, root: Path) -> None:
        self.bin = _binary("STARSYNC_BIN")
        self.root = root
        (root / "data").mkdir(parents=True, exist_ok=True)
        config = root / "test-config.toml"
        config.write_text("")
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "STARSYNC_CONFIG": str(config),
            "STARSYNC_DATA_DIR": str(root / "data"),
            "DATABASE_URL": str(root / "data" / "starsync.db"),
            "STARSYNC_ADMIN_TOKEN": ADMIN,
            "RUST_LOG": "info",
        }
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.log: List[str] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = dict(self.env, STARSYNC_BIND=f"127.0.0.1:{self.port}")
        self.proc = subprocess.Popen(
            [self.bin, "serve"],
            env=env,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        found: List[str] = []
        ready = threading.Event()

        def drain(stream) -> None:
            for line in stream:
                self.log.append(line)
                if not ready.is_set() and "listening on http://" in line:
                    found.append(line.split("listening on ", 1)[1].split()[0])
                    ready.set()
            ready.set()

        threading.Thread(target=drain, args=(self.proc.stderr,), daemon=True).start()
        if not ready.wait(30) or not found:
            self.stop()
            raise RuntimeError("starsync serve did not start:\n" + "".join(self.log[-30:]))
        self.port = int(found[0].rsplit(":", 1)[1].rstrip("/"))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def cli(self, *args: str) -> str:
        """Runs the `starsync` command line against this server's database."""
        out = subprocess.run(
            [self.bin, *args],
            env=dict(self.env, RUST_LOG="warn"),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, f"starsync {args}: {out.stdout}{out.stderr}"
        return out.stdout + out.stderr

    def entity(self, entity_type: str, uuid: str) -> Tuple[int, Any]:
        """The server's copy of an entity: (HTTP status, body)."""
        req = urllib.request.Request(
            f"{self.base}/api/sync/entities/{entity_type}/{uuid}",
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


@pytest.fixture
def server(tmp_path: Path):
    s = Server(tmp_path / "server")
    s.start()
    yield s
    s.stop()


@pytest.fixture
def make_node(tmp_path: Path, server: Server):
    """Registers a Python node with the test server: make_node("A")."""

    def make(code: str, **kwargs: Any) -> starsync.Node:
        kwargs.setdefault("max_retries", 0)
        return starsync.Node.init(
            tmp_path / f"node-{code}", server.base, code, name=code, admin_token=ADMIN, **kwargs
        )

    return make


class CliNode:
    """A `starsync-node` process per command, with its own data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.bin = _binary("STARSYNC_NODE_BIN")
        self.dir = data_dir

    def run(self, *args: str) -> Any:
        out = subprocess.run(
            [self.bin, "--data-dir", str(self.dir), "--json", *args],
            env={"PATH": os.environ.get("PATH", ""), "RUST_LOG": "warn"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, f"starsync-node {args}: {out.stdout}{out.stderr}"
        return json.loads(out.stdout) if out.stdout.strip() else None

    def data(self, entity_type: str, uuid: str) -> Optional[Dict[str, Any]]:
        """The entity's data, or None when the node does not have it live."""
        for e in self.run("list", entity_type):
            if e["entity_uuid"] == uuid:
                return e["data"]
        return None


@pytest.fixture
def cli_node(tmp_path: Path, server: Server):
    def make(code: str) -> CliNode:
        n = CliNode(tmp_path / f"cli-{code}")
        n.run("init", "--server", server.base, "--code", code, "--admin-token", ADMIN)
        return n

    return make


class Recorder:
    """Callbacks that record what a SyncService reported, and waits on it."""

    NAMES = ("status", "completed", "failed", "conflict", "data")

    def __init__(self) -> None:
        self.events: List[Tuple[str, Any]] = []
        self.threads: set = set()
        self.cond = threading.Condition()

    def callback(self, name: str) -> Callable[[Any], None]:
        def record(arg: Any) -> None:
            with self.cond:
                self.events.append((name, arg))
                self.threads.add(threading.get_ident())
                self.cond.notify_all()

        return record

    def callbacks(self) -> Dict[str, Callable[[Any], None]]:
        return {
            "on_status_changed": self.callback("status"),
            "on_sync_completed": self.callback("completed"),
            "on_sync_failed": self.callback("failed"),
            "on_conflict_detected": self.callback("conflict"),
            "on_data_changed": self.callback("data"),
        }

    def of(self, name: str) -> List[Any]:
        with self.cond:
            return [a for n, a in self.events if n == name]

    def wait(self, pred: Callable[["Recorder"], Any], timeout: float = 20.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}; saw {self.events}")
                self.cond.wait(left)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def pytest_report_header(config) -> List[str]:
    return [f"starsync {starsync.__version__} from {Path(starsync.__file__).parent}",
            f"python {sys.version.split()[0]}"]
