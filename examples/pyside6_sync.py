"""A Qt window that shows a starsync node's sync status: python examples/pyside6_sync.py NODE_DIR.

SyncService callbacks run on the service's thread; emitting a Qt signal from there is safe and
Qt delivers it to slots on the GUI thread. (--once: quit after the first sync, for CI.)"""
import sys
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QApplication, QLabel
import starsync

class SyncBridge(QObject):
    status_changed, sync_completed = Signal(str), Signal(object)
    sync_failed, conflict_detected = Signal(str), Signal(object)

    def __init__(self, node: starsync.Node, interval: float = 300):
        super().__init__()
        self.service = starsync.SyncService(node, interval,
            on_status_changed=self.status_changed.emit, on_sync_completed=self.sync_completed.emit,
            on_sync_failed=self.sync_failed.emit, on_conflict_detected=self.conflict_detected.emit)

app = QApplication(sys.argv)
bridge, label = SyncBridge(starsync.Node.open(sys.argv[1])), QLabel("starting…")
bridge.status_changed.connect(label.setText)
bridge.sync_completed.connect(lambda r: print(f"synced: sent {r['sent']}, received {r['received']}", flush=True))
bridge.sync_completed.connect(lambda r: "--once" in sys.argv and app.quit())
app.aboutToQuit.connect(bridge.service.stop)
label.show()
sys.exit(app.exec())
