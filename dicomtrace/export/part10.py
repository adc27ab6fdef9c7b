"""Export the data sets that crossed the wire as DICOM Part 10 files (PS3.10 7.1).

:class:`Part10Exporter` follows DIMSE messages as they are decoded (it is the
builder's ``MessageObserver``): when a selected message starts, a file is opened
in ``DIR/.incoming``; the preamble, ``DICM`` and the file meta information
(:func:`file_meta`) go first, then every data set fragment is appended as it
arrives, untouched, so memory does not grow with object size.  When the
capture ends the files get their final names; a data set that was not
completely captured keeps a ``.partial`` suffix and is never presented as whole.

The file meta information takes Media Storage SOP Class/Instance UID from the
command (not from a dictionary, not padded), the transfer syntax negotiated for
the presentation context (inferred from the bytes when the negotiation was not
captured) and dicomtrace's own implementation class UID and version name.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from dicomtrace import __version__
from dicomtrace.dimse.commands import C_FIND, C_GET, C_MOVE, C_STORE, is_response
from dicomtrace.dimse.dataset import IMPLICIT_LE, infer_transfer_syntax
from dicomtrace.model.association import Association, Operation

# 2.25 + a UUID (PS3.5 B.2): dicomtrace's implementation class UID
IMPLEMENTATION_CLASS_UID = "2.25.%d" % uuid.uuid5(uuid.NAMESPACE_URL, "dicomtrace").int
IMPLEMENTATION_VERSION_NAME = ("DICOMTRACE_" + __version__.replace(".", ""))[:16]
KINDS = ("stores", "identifiers", "n-datasets", "commands")
INCLUDE_KEY = {"store": "stores", "identifier": "identifiers", "n-dataset": "n-datasets"}
ZEROS = bytes(1 << 16)


IOV_MAX = 1024  # pieces per writev (POSIX's minimum IOV_MAX is 16; Linux takes 1024)


def _libc_writev():
    """libc's writev(2) through ctypes (it lets go of the interpreter lock), or None."""
    try:
        import ctypes

        # the program's own symbols hold libc's (ctypes.util.find_library runs ldconfig)
        fn = ctypes.CDLL(None, use_errno=True).writev
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    fn.restype = ctypes.c_ssize_t
    return fn, ctypes.get_errno


_WRITEV = _libc_writev() if hasattr(os, "writev") else None


class Iovecs:
    """``buf[starts[i]:ends[i]]`` in order as writev(2)'s ``struct iovec`` array (base
    address, length), built with numpy from the spans: no view is made per TCP segment's
    piece (700,000 views of the bench capture's pixel data and the Python side of
    os.writev cost about 0.2 s).  Holds ``buf`` while it lives."""

    __slots__ = ("buf", "iov", "starts", "ends")

    def __init__(self, buf, starts, ends):
        import numpy as np

        s = np.asarray(starts, dtype=np.uint64)
        self.iov = np.empty((len(s), 2), dtype=np.uint64)
        self.iov[:, 0] = s + np.uint64(np.frombuffer(buf, dtype=np.uint8).ctypes.data)
        self.iov[:, 1] = np.asarray(ends, dtype=np.uint64) - s
        self.buf, self.starts, self.ends = buf, starts, ends

    def write(self, fd: int) -> None:
        """writev(2) of up to IOV_MAX at a time, through ctypes (the interpreter lock is let
        go during the call); a short write goes on piece by piece, and the next error is
        the system's."""
        writev, errno_of = _WRITEV
        iov, n = self.iov, len(self.iov)
        for i in range(0, n, IOV_MAX):
            part = iov[i:i + IOV_MAX]
            want = int(part[:, 1].sum())
            while True:
                done = writev(fd, part.ctypes.data, len(part))
                if done >= 0:
                    break
                err = errno_of()
                if err != errno.EINTR:
                    raise OSError(err, os.strerror(err))
            if done < want:
                view = memoryview(self.buf)
                pos = 0
                for k in range(i, min(n, i + IOV_MAX)):
                    a, b = int(self.starts[k]), int(self.ends[k])
                    if pos + (b - a) > done:
                        _write_all(fd, view[a + max(0, done - pos):b])
                    pos += b - a


_META = struct.Struct("<HH2sH")  # group, element, VR, 16-bit length (PS3.5 7.1.2)
_META_OB = struct.Struct("<HH2sHI")  # ... VR, reserved, 32-bit length


def file_meta(sop_class: str, sop_instance: str | None, transfer_syntax: str,
              source_ae: str | None = None) -> bytes:
    """The preamble, ``DICM`` and the file meta information (PS3.10 7.1) of an exported
    object: group 0002 in Explicit VR Little Endian, as pydicom's ``write_file_meta_info``
    writes it.  Plain ASCII values (every UID and AE title on the wire of a conforming
    peer) are encoded here: pydicom's data set, validation and writer cost ~0.5 ms an
    object (0.1 s of the bench capture's 200).  Anything else (an empty or non-ASCII value,
    a UID longer than 64 characters) goes to pydicom, so that it says and does what it
    says and does about those."""
    values = [sop_class, sop_instance, transfer_syntax, IMPLEMENTATION_CLASS_UID]
    if not all(v and len(v) <= 64 and v.isascii() and v.isprintable() for v in values) or \
            (source_ae is not None and not source_ae.isascii()):
        return _pydicom_meta(sop_class, sop_instance, transfer_syntax, source_ae)
    out = [_META_OB.pack(2, 0x0001, b"OB", 0, 2) + b"\x00\x01"]
    for elem, vr, text, pad in ((0x0002, b"UI", sop_class, b"\x00"),
                                (0x0003, b"UI", sop_instance, b"\x00"),
                                (0x0010, b"UI", transfer_syntax, b"\x00"),
                                (0x0012, b"UI", IMPLEMENTATION_CLASS_UID, b"\x00"),
                                (0x0013, b"SH", IMPLEMENTATION_VERSION_NAME, b" "),
                                (0x0016, b"AE", source_ae, b" ")):
        if text is None:
            continue
        value = text.encode("ascii")
        if len(value) % 2:
            value += pad
        out.append(_META.pack(2, elem, vr, len(value)) + value)
    body = b"".join(out)
    return (b"\x00" * 128 + b"DICM" + _META.pack(2, 0x0000, b"UL", 4)
            + struct.pack("<I", len(body)) + body)


def _pydicom_meta(sop_class, sop_instance, transfer_syntax, source_ae) -> bytes:
    from io import BytesIO

    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source_ae is not None:
        meta.SourceApplicationEntityTitle = source_ae
    fp = BytesIO()
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(DicomFileLike(fp), meta, enforce_standard=True)
    return fp.getvalue()


def write_spans(fd: int, buf, starts, ends) -> None:
    """Write ``buf[starts[i]:ends[i]]`` in order to ``fd`` (:class:`Iovecs`)."""
    if len(starts):
        Iovecs(buf, starts, ends).write(fd)


def ready_to_write(pieces):
    """What :func:`write_pieces` will write, with as much of the work done now, in the
    caller's thread, as can be: a PDV run's spans as an :class:`Iovecs`, else ``pieces``."""
    spans = pieces.spans() if _WRITEV is not None and hasattr(pieces, "spans") else None
    return Iovecs(*spans) if spans is not None and len(spans[1]) else pieces


def write_pieces(fd: int, pieces) -> None:
    """Write the views ``pieces`` to ``fd`` as they are (no joining copy): a writev system
    call for up to IOV_MAX of them at a time instead of a write per TCP segment's piece (on
    the bench capture 750,000 writes of ~1.4 KB cost 1.8 s); spans of one buffer (a PDV
    run's) without making the views (:class:`Iovecs`)."""
    pieces = ready_to_write(pieces)
    if type(pieces) is Iovecs:
        pieces.write(fd)
        return
    writev = getattr(os, "writev", None)
    if writev is None:
        for piece in pieces:
            _write_all(fd, piece)
        return
    i, n = 0, len(pieces)
    while i < n:
        batch = pieces[i:i + IOV_MAX]
        want = sum(map(len, batch))
        done = writev(fd, batch)
        i += len(batch)
        if done < want:  # a short write (disk full is an OSError): write the rest
            _write_all(fd, b"".join(bytes(p) for p in batch)[done:])


def _write_all(fd: int, data) -> None:
    """All of ``data`` (os.write may take less of it)."""
    view = memoryview(data)
    while len(view):
        view = view[os.write(fd, view):]


class _Writer:
    """One thread that writes the data sets' pieces to their files, in the order given,
    while the capture is read on: writev(2) lets go of the interpreter lock, so the copy
    into the page cache (~0.35 s of system time a GB) runs beside the parsing, on the other
    core when it is free.  What is handed over is ready to write (:func:`ready_to_write`:
    the thread holds the interpreter lock as little as it can), at most :attr:`LIMIT` bytes
    wait (views of the capture's memory maps), and the first error is raised in the
    caller's thread, at its next call."""

    # (mapped pages count in memory use; the reader keeps the last MAP_KEEP bytes it read
    # mapped so that what waits here is mostly written from pages still mapped: see
    # capture/reader.py, and look at MAP_KEEP again if this changes)
    LIMIT = 8 << 20

    def __init__(self):
        self.queue = None
        self.thread = None
        self.error: BaseException | None = None
        self.waiting = 0  # bytes handed over and not yet written
        self.room = None  # a Condition: ``waiting`` went down

    def submit(self, fn, *args, size: int = 0) -> None:
        if self.thread is None:
            import queue
            import threading

            self.queue, self.room = queue.SimpleQueue(), threading.Condition()
            self.thread = threading.Thread(target=self._run, name="dicomtrace-export", daemon=True)
            self.thread.start()
        self._raise()
        if size:
            with self.room:
                while self.waiting > self.LIMIT and self.error is None:
                    self.room.wait()
                self.waiting += size
            self._raise()
        self.queue.put((fn, args, size))

    def _run(self) -> None:
        get = self.queue.get
        while True:
            item = get()
            if item is None:
                return
            fn, args, size = item
            if self.error is None:
                try:
                    fn(*args)
                except BaseException as e:  # (raised in the caller's thread)
                    self.error = e
            if size or self.error is not None:
                with self.room:
                    self.waiting -= size
                    self.room.notify()

    def _raise(self) -> None:
        error = self.error
        if error is not None and not isinstance(error, _Failed):
            self.error = _Failed()  # nothing more is written after an error
            raise error

    def close(self) -> None:
        """Wait for every write given so far; the first error is raised here if it was not
        already."""
        if self.thread is None:
            return
        self.queue.put(None)
        self.thread.join()
        self.thread = None
        self._raise()


class _Failed(Exception):
    """The writes stopped at an error already raised."""


def _write_zeros(fd: int, size: int) -> None:
    while size > 0:
        n = min(size, len(ZEROS))
        _write_all(fd, ZEROS[:n])
        size -= n


@dataclass
class ExportOptions:
    out_dir: Path
    layout: str = "flat"  # "flat" or "patient/study/series"
    complete_only: bool = False
    min_size: int = 0
    sop_classes: frozenset[str] = frozenset()
    associations: frozenset[int] = frozenset()
    ae_titles: frozenset[str] = frozenset()
    include: frozenset[str] = frozenset({"stores"})
    redactor: object = None  # a dicomtrace.redact.Redactor: de-identify the files written


@dataclass
class ExportedObject:
    """One data set (or command set) written to disk."""

    association: Association  # its id is final only at the end
    message_id: int | None
    kind: str  # store, identifier, n-dataset, command
    command: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    bytes: int = 0
    complete: bool = False
    incomplete_reason: str | None = None
    attributes: dict = field(default_factory=dict)
    temp: Path | None = None
    file: Path | None = None
    operation: Operation | None = None


class _Open:
    """An object being written: its file is opened, written and closed by the writer's
    thread (creating a file costs ~0.25 ms on ext4), in the order the work was given."""

    __slots__ = ("obj", "fd", "meta_written", "lost")

    def __init__(self, obj: ExportedObject):
        self.obj = obj
        self.fd = None
        self.meta_written = False
        self.lost = 0

    def create(self) -> None:
        self.fd = os.open(self.obj.temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)

    def write(self, data: bytes) -> None:
        _write_all(self.fd, data)

    def write_pieces(self, pieces) -> None:
        write_pieces(self.fd, pieces)

    def write_zeros(self, size: int) -> None:
        _write_zeros(self.fd, size)

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


def _safe(part: str | None, fallback: str) -> str:
    part = (part or "").strip()
    part = re.sub(r"[^A-Za-z0-9._^=-]+", "_", part)[:64].strip("._")
    return part or fallback


class Part10Exporter:
    """Writes selected DIMSE data sets to disk while the capture is read."""

    def __init__(self, options: ExportOptions, tag: str = ""):
        self.opts = options
        self.tag = tag  # keeps temp names apart when several processes export
        self.incoming = Path(options.out_dir) / ".incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.open: dict[int, _Open] = {}
        self.done: list[ExportedObject] = []
        self.seq = 0
        self.response_counts: dict[tuple[int, int], int] = {}
        self.writer = _Writer()  # the data set pieces, and the files' closing, go through it

    # -- observer interface ---------------------------------------------------
    def message_started(self, assoc, side, msg, op) -> None:
        cmd = msg.command
        cf = cmd.command_field
        if cf is None:
            return
        kind = self._kind(cf, msg.has_data_set)
        if "commands" in self.opts.include:
            self._write_command(assoc, msg, op)
        if kind is None or INCLUDE_KEY[kind] not in self.opts.include:
            return
        o = self.opts
        sop_class = cmd.sop_class_uid or (op.sop_class_uid if op is not None else None) or ""
        if o.sop_classes and sop_class not in o.sop_classes:
            return
        if o.ae_titles and not ({assoc.calling_ae, assoc.called_ae} & o.ae_titles):
            return
        pc = assoc.context(msg.context_id)
        ts = pc.transfer_syntax if pc is not None and pc.result == 0 else None
        instance = cmd.sop_instance_uid
        if not instance:
            # identifiers and some N-service data sets have no instance UID: make a stable one
            # (frame numbers, not connection ids: the same in every worker of a parallel run)
            instance = "2.25.%d" % uuid.uuid5(
                uuid.NAMESPACE_OID, f"{msg.first_frame}.{msg.command_frame}.{cmd.message_id}").int
        self.seq += 1
        obj = ExportedObject(assoc, cmd.message_id if not is_response(cf) else cmd.responded_to,
                             kind, msg.command.name, sop_class, instance, ts or "",
                             operation=op)
        obj.temp = self.incoming / f"{self.tag}{self.seq:08d}.part"
        st = self.open[id(msg)] = _Open(obj)
        self.writer.submit(st.create)

    def message_data(self, assoc, msg, pieces, size) -> None:
        st = self.open.get(id(msg))
        if st is None:
            return
        if not st.meta_written:
            if not st.obj.transfer_syntax:
                first = bytes(pieces[0][:16]) if pieces else b""
                st.obj.transfer_syntax = infer_transfer_syntax(first) or IMPLICIT_LE
            self.writer.submit(st.write, self._meta_bytes(st.obj, assoc))
            st.meta_written = True
        if pieces is None:
            st.lost += size  # keep offsets: the lost stretch is written as zeros
            self.writer.submit(st.write_zeros, size)
        else:
            self.writer.submit(st.write_pieces, ready_to_write(pieces), size=size)

    def message_complete(self, assoc, side, msg, op, incomplete) -> None:
        st = self.open.pop(id(msg), None)
        if st is None:
            return
        obj = st.obj
        obj.operation = op if op is not None else obj.operation
        if not st.meta_written:
            self.writer.submit(st.write, self._meta_bytes(obj, assoc))
        self.writer.submit(st.close)  # after the file's pieces
        obj.bytes = msg.dataset_bytes
        obj.complete = msg.dataset_whole and not st.lost
        obj.incomplete_reason = None if obj.complete else (
            incomplete or ("part of the data set was never captured" if st.lost
                           else "the data set did not finish"))
        if obj.kind == "store" and op is not None and op.dataset is not None:
            obj.attributes = dict(op.dataset.attributes)
        if obj.kind == "identifier" and is_response(msg.command.command_field):
            key = (id(assoc), obj.message_id or 0)
            self.response_counts[key] = self.response_counts.get(key, 0) + 1
            obj.kind = f"match{self.response_counts[key]}"
        self.done.append(obj)

    # -- the end ---------------------------------------------------------------
    def finish(self) -> list[ExportedObject]:
        """Close what is open (as partial), give files their final names, apply filters
        that need the final association ids, and return what was written."""
        return self.place(self.close_open())

    def close_open(self) -> list[ExportedObject]:
        """The capture ended: what is still open is partial.  Returns every object."""
        try:
            self.writer.close()  # every piece written, every finished file closed
        finally:
            for st in list(self.open.values()):
                st.close()
                st.obj.complete = False
                st.obj.incomplete_reason = "the capture ended during the transfer"
                self.done.append(st.obj)
            self.open.clear()
        return self.done

    def place(self, objects: list[ExportedObject]) -> list[ExportedObject]:
        """Final names (association ids are final now) and the filters that need them."""
        kept = []
        used: set[Path] = set()
        o = self.opts
        for obj in sorted(objects, key=lambda o: (o.association.id, o.temp.name)):
            aid = obj.association.id
            if ((o.associations and aid not in o.associations)
                    or (o.complete_only and not obj.complete) or obj.bytes < o.min_size):
                obj.temp.unlink(missing_ok=True)
                continue
            if o.layout == "patient/study/series" and not obj.attributes:
                obj.attributes = self._folder_attributes(obj)
            if o.redactor is not None and not self._redact(obj):
                continue
            final = self._final_path(obj, used)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(obj.temp, final)
            obj.file = final
            used.add(final)
            kept.append(obj)
        shutil.rmtree(self.incoming, ignore_errors=True)
        return kept

    def _redact(self, obj: ExportedObject) -> bool:
        """De-identify a written file; partial data sets cannot be rewritten safely and are
        dropped.  Returns whether the file is kept."""
        from dicomtrace.redact import IDENTIFYING, INSTANCE_UIDS, deidentify_file

        red = self.opts.redactor
        if not obj.complete or obj.kind == "command":
            obj.temp.unlink(missing_ok=True)
            return False
        try:
            new_uid = deidentify_file(obj.temp, red)
        except Exception:
            obj.temp.unlink(missing_ok=True)
            return False
        for k, v in list(obj.attributes.items()):
            if k in IDENTIFYING or (red.uids and k in INSTANCE_UIDS):
                obj.attributes[k] = red.pseudonym(k, v)
        if new_uid:
            obj.sop_instance_uid = new_uid
        return True

    # -- helpers ----------------------------------------------------------------
    @staticmethod
    def _kind(cf: int, has_data_set: bool) -> str | None:
        if not has_data_set:
            return None
        base = cf & 0x7FFF
        if base == C_STORE and not is_response(cf):
            return "store"
        if base in (C_FIND, C_MOVE, C_GET):
            return "identifier"
        if base >= 0x0100 and base != 0x0FFF:
            return "n-dataset"
        return None

    def _meta_bytes(self, obj: ExportedObject, assoc) -> bytes:
        """The preamble, ``DICM`` and the file meta information (PS3.10 7.1), naming the
        sender's AE title as the source when it can be one."""
        sender = assoc.calling_ae if obj.kind == "store" and obj.operation is not None \
            and obj.operation.sender == "requestor" else assoc.called_ae
        if sender and sender.strip() and all(32 <= ord(c) < 127 and c != "\\" for c in sender):
            sender = sender.strip()[:16]
        else:
            sender = None
        return file_meta(obj.sop_class_uid or "1.2.840.10008.1.1", obj.sop_instance_uid,
                         obj.transfer_syntax, sender)

    def _write_command(self, assoc, msg, op) -> None:
        """The command set itself, as a Part 10 file in Implicit VR Little Endian."""
        self.seq += 1
        cmd = msg.command
        obj = ExportedObject(assoc, cmd.message_id if not is_response(cmd.command_field or 0)
                             else cmd.responded_to, "command", cmd.name,
                             cmd.sop_class_uid or "1.2.840.10008.1.1",
                             "2.25.%d" % uuid.uuid5(uuid.NAMESPACE_OID,
                                                    f"cmd.{msg.first_frame}.{msg.command_frame}").int,
                             IMPLICIT_LE, operation=op)
        obj.temp = self.incoming / f"{self.tag}{self.seq:08d}.part"
        with open(obj.temp, "wb") as fp:
            fp.write(self._meta_bytes(obj, assoc))
            fp.write(msg.raw_command)
        obj.bytes = len(msg.raw_command)
        obj.complete = True
        self.done.append(obj)

    @staticmethod
    def _folder_attributes(obj: ExportedObject) -> dict:
        """Patient, study and series of a file that is not a C-STORE data set: a C-FIND/
        C-MOVE/C-GET match's own identifier, else the request's data set (the identifier,
        or the stored object a command belongs to)."""
        op = obj.operation
        if op is None:
            return {}
        if obj.kind.startswith("match"):
            matches = [r.identifier for r in op.responses if r.identifier is not None]
            n = int(obj.kind[5:] or 0)
            if 0 < n <= len(matches):
                return dict(matches[n - 1])
        return dict(op.dataset.attributes) if op.dataset is not None else {}

    def _final_path(self, obj: ExportedObject, used: set[Path]) -> Path:
        out = Path(self.opts.out_dir)
        aid = obj.association.id
        mid = obj.message_id if obj.message_id is not None else 0
        tag = "" if obj.kind == "store" else f"_{obj.kind}"
        if self.opts.layout == "patient/study/series":
            # every kind of file goes into the tree; what is not a stored object keeps the
            # flat name that says what it is, beside the objects of its patient and study
            a = obj.attributes
            name = (f"{_safe(obj.sop_instance_uid, 'instance')}.dcm" if obj.kind == "store" else
                    f"{aid:03d}_{mid:05d}{tag}_{_safe(obj.sop_instance_uid, 'instance')}.dcm")
            path = (out / _safe(a.get("PatientID"), "unknown-patient")
                    / _safe(a.get("StudyInstanceUID"), "unknown-study")
                    / _safe(a.get("SeriesInstanceUID"), "unknown-series") / name)
        else:
            path = out / f"{aid:03d}_{mid:05d}{tag}_{_safe(obj.sop_instance_uid, 'instance')}.dcm"
        if not obj.complete:
            path = path.with_name(path.name + ".partial")
        n = 2
        base = path
        while path in used or path.exists():
            path = base.with_name(f"{base.stem}-{n}{base.suffix}")
            n += 1
        return path
