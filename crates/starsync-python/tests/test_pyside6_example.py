"""examples/pyside6_sync.py runs headless (Qt's offscreen platform) and syncs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "pyside6_sync.py"


def test_pyside6_example_forwards_callbacks_to_qt_signals(make_node, server):
    pytest.importorskip("PySide6.QtWidgets", reason="PySide6 is not installed (run-tests.sh installs it)")
    node = make_node("QT")
    uuid = node.create("Memo", {"text": "from the Qt app"})
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), node.data_dir, "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "synced: sent 1, received 0" in out.stdout, out.stdout + out.stderr
    assert server.entity("Memo", uuid)[0] == 200
