"""``live --dashboard``: a Textual terminal view of the live analysis.

The analysis runs in a worker thread (the stages are not shared); after each batch of
frames, at most a few times a second, it takes a :class:`Snapshot` of what the view shows
and hands it to the app, which only draws.  Keys: arrows select an association, Enter
shows its operations, ``a`` shows the recent operations of all, ``q`` stops the capture.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, RichLog, Static

REFRESH = 0.25  # seconds between snapshots
STATS_EVERY = 2.0  # seconds between asking tcpdump for its counters
RECENT = 200  # operations kept for "all associations"


@dataclass
class Row:
    key: str
    cells: tuple


@dataclass
class Snapshot:
    """What the dashboard shows, taken in the analysis thread."""

    associations: list[Row] = field(default_factory=list)
    operations: dict[str, list[Row]] = field(default_factory=dict)  # association key -> rows
    recent: list[Row] = field(default_factory=list)
    status: str = ""


def _rate(nbytes: int, seconds: float) -> str:
    from dicomtrace.output.text import rate

    return rate(nbytes / seconds) if seconds > 0 and nbytes else "-"


def take_snapshot(live, capture, started: float) -> Snapshot:
    from dicomtrace.output.text import size, uid_label

    snap = Snapshot()
    now = live.reader.last_time if live.reader is not None else None
    ended = {id(a) for a in live.ended}
    everything = []
    for a in live.engine.associations:
        if not any(a.pdus.values()):
            continue
        key = str(a.conn.id)
        done = id(a) in ended
        last = a.end_time if done and a.end_time else (now or a.start_time)
        moved = sum(a.pdata_bytes.values())
        ops = a.operations
        state = a.outcome if done else ("open" if a.accept_time or a.request_time else "?")
        snap.associations.append(Row(key, (
            str(live.provisional_id(a)), f"{a.requestor} → {a.acceptor}",
            f"{a.calling_ae or '?'} → {a.called_ae or '?'}", state, str(len(ops)), size(moved),
            _rate(moved, last - a.start_time))))
        rows = []
        for op in ops:
            status = op.final.info.text if op.final else "waiting"
            took = f"{(op.final.time - op.request_time) * 1000:.1f} ms" if op.final else "-"
            rows.append(Row(f"{key}:{op.message_id}:{len(rows)}", (
                str(op.message_id), op.service, uid_label(op.sop_class_uid),
                size(op.dataset_bytes) if op.dataset_bytes else "-", status, took)))
            everything.append((op.request_time, live.provisional_id(a), rows[-1]))
        snap.operations[key] = rows
    everything.sort(key=lambda t: t[0])
    snap.recent = [Row(r.key, (str(aid),) + r.cells) for _, aid, r in everything[-RECENT:]]
    st = capture.current_stats()
    frames = live.reader.frames if live.reader is not None else 0
    snap.status = (f"{capture.interface}: {frames} packets analysed, "
                   f"{len(live.open_associations())} association(s) open, "
                   f"{len(live.ended)} ended; drops: kernel {st.dropped_kernel or 0}, interface "
                   f"{st.dropped_interface or 0}; {time.monotonic() - started:.0f} s")
    return snap


class Dashboard(App):
    """Open associations, their operations, findings as they appear, and drops."""

    TITLE = "dicomtrace live"
    CSS = """
    #associations { height: 45%; border: round $accent; }
    #lower { height: 1fr; }
    #operations { width: 3fr; border: round $accent; }
    #findings { width: 2fr; border: round $accent; }
    #status { height: 1; background: $boost; }
    """
    BINDINGS = [Binding("q", "quit_capture", "stop capture"),
                Binding("a", "show_all", "all operations"),
                Binding("enter", "show_selected", "operations of the association", show=True)]

    def __init__(self, capture, on_ready=None, on_tick=None):
        super().__init__()
        self.capture = capture
        self.on_ready = on_ready
        self.on_tick = on_tick  # called every REFRESH seconds in the app's thread
        self.snapshot = Snapshot()
        self.selected: str | None = None  # association key, or None: recent operations of all

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical():
            yield DataTable(id="associations", cursor_type="row")
            with Horizontal(id="lower"):
                yield DataTable(id="operations", cursor_type="row")
                yield RichLog(id="findings", wrap=True, markup=False, min_width=20)
            yield Static("starting", id="status")
        yield Footer()

    def on_mount(self) -> None:
        t = self.query_one("#associations", DataTable)
        t.add_columns("assoc", "requestor → acceptor", "calling → called AE", "state", "ops",
                      "PDV data", "throughput")
        t.border_title = "associations (arrows select, Enter: its operations)"
        self.query_one("#findings", RichLog).border_title = "findings"
        self._operation_columns()
        self.query_one("#findings", RichLog).write("Findings appear here as their evidence "
                                                  "completes.")
        if self.on_tick is not None:
            self.set_interval(REFRESH, self.on_tick)
        if self.on_ready is not None:  # the analysis starts once there is a screen to draw on
            self.on_ready()

    def _operation_columns(self) -> None:
        t = self.query_one("#operations", DataTable)
        t.clear(columns=True)
        cols = ("msg", "command", "SOP class", "data", "status", "latency")
        t.add_columns(*(cols if self.selected else ("assoc",) + cols))
        t.border_title = (f"operations of association {self._assoc_label()}" if self.selected
                          else "recent operations (Enter: one association's)")

    def _assoc_label(self) -> str:
        for r in self.snapshot.associations:
            if r.key == self.selected:
                return r.cells[0]
        return "?"

    # -- fed from the analysis thread through call_from_thread ---------------------------
    def show(self, snap: Snapshot) -> None:
        self.snapshot = snap
        assocs = self.query_one("#associations", DataTable)
        cursor = assocs.cursor_row
        assocs.clear()
        for r in snap.associations:
            assocs.add_row(*r.cells, key=r.key)
        if snap.associations:
            assocs.move_cursor(row=min(max(cursor, 0), len(snap.associations) - 1))
        ops = self.query_one("#operations", DataTable)
        ops.clear()
        rows = snap.operations.get(self.selected, []) if self.selected else snap.recent
        for r in rows[-500:]:
            ops.add_row(*r.cells)
        self.query_one("#status", Static).update(snap.status)

    def add_finding(self, text: str) -> None:
        self.query_one("#findings", RichLog).write(text)

    def capture_ended(self) -> None:
        self.exit()

    # -- keys -------------------------------------------------------------------------------
    def action_show_selected(self) -> None:
        assocs = self.query_one("#associations", DataTable)
        if not self.snapshot.associations:
            return
        row = self.snapshot.associations[min(assocs.cursor_row, len(self.snapshot.associations) - 1)]
        self.selected = row.key
        self._operation_columns()
        self.show(self.snapshot)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "associations":
            self.action_show_selected()

    def action_show_all(self) -> None:
        self.selected = None
        self._operation_columns()
        self.show(self.snapshot)

    def action_quit_capture(self) -> None:
        self.query_one("#status", Static).update("stopping the capture ...")
        self.capture.stop()


def run_dashboard(live, reader, capture):
    """Run the analysis under the dashboard; returns the Analysis when the capture ends."""
    from dicomtrace.live import Tap

    started = time.monotonic()
    state = {"last": 0.0, "stats": 0.0}
    result: dict = {}

    def to_app(method, *args) -> None:
        try:
            app.call_from_thread(method, *args)
        except RuntimeError:
            pass  # the app is not running (any more): nothing to draw on

    def on_batch(lv) -> None:  # (in the analysis thread, between batches)
        now = time.monotonic()
        if now - state["stats"] >= STATS_EVERY:
            state["stats"] = now
            capture.request_stats()
        if now - state["last"] >= REFRESH:
            state["last"] = now
            state["behind"] = False
            to_app(app.show, take_snapshot(lv, capture, started))
        else:
            state["behind"] = True  # drawn by on_tick if no batch follows soon

    def on_tick() -> None:  # (in the app's thread)
        # the last batch before traffic stops (an association's release and close) came
        # too soon after a snapshot to get its own: take it while the analysis waits for
        # packets, so the screen never stays behind what was analysed
        if state.get("behind") and live.busy.acquire(blocking=False):
            try:
                state["last"] = time.monotonic()
                state["behind"] = False
                snap = take_snapshot(live, capture, started)
            finally:
                live.busy.release()
            app.show(snap)

    def on_finding(f) -> None:
        where = f" [association {f.association}]" if f.association is not None else ""
        to_app(app.add_finding, f"{f.severity.upper()} {f.code}{where}: {f.message}")

    live.taps.append(Tap(None, on_finding, on_batch))

    def work() -> None:
        try:
            result["analysis"] = live.run(reader)
        except BaseException as e:  # handed to the main thread, which reports it
            result["error"] = e
        finally:
            to_app(app.capture_ended)

    worker = threading.Thread(target=work, daemon=True)
    app = Dashboard(capture, on_ready=worker.start, on_tick=on_tick)
    app.run()
    capture.stop()  # the user quit, or the capture ended: either way tcpdump finishes
    if worker.ident is None:  # the app ended before it started the analysis
        worker.start()
    worker.join()
    if "error" in result:
        raise result["error"]
    return result["analysis"]
