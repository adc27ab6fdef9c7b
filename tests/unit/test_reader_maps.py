"""The memory maps of a regular file: once the reader has moved past a chunk its pages are
dropped from the process (madvise MADV_DONTNEED), and the views still held into it read the
file's bytes all the same; a part of a file (dicomtrace.parallel) gives the frames of a
whole read, its pcap header copied alone and its records mapped."""

from __future__ import annotations

import re

from dicomtrace.capture import open_capture
from dicomtrace.capture import reader as capture_reader

from unit.test_walk import offsets, pcap


def _maps_of(path) -> tuple[int, int]:
    """This process's maps of ``path``: how many, and their resident KiB (/proc/self/smaps)."""
    maps, total, inside = 0, 0, False
    for line in open("/proc/self/smaps"):
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            inside = line.rstrip().endswith(str(path))
            maps += inside
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return maps, total


def test_views_of_dropped_chunks_read_the_file(tmp_path):
    """24 MB in 1 MiB chunks, every batch kept (as views a later stage holds): what stays
    resident of the file's maps is about one chunk and MAP_KEEP, and every frame of every
    batch, read after its pages were dropped, is the file's."""
    caps = ([1514] * 45 + [66]) * 350
    data = pcap(caps, seed=3)
    path = tmp_path / "big.pcap"
    path.write_bytes(data)
    reader = open_capture(str(path), chunk_size=1 << 20)
    assert type(reader.src) is capture_reader._MappedSource
    kept, views = [], []
    for batch in reader.batches():
        kept.append(batch)
        # a view made while the chunk is current, read after it was dropped
        views.append(batch.data[int(batch.offsets[0]):int(batch.offsets[0]) + 64])
    resident = _maps_of(path)[1]
    most = (2 << 20) + capture_reader.MAP_KEEP
    assert len(kept) > 20 and resident * 1024 < most, resident  # (24 MB without the drop)
    offs = offsets(data)
    frames = 0
    for batch, view in zip(kept, views):
        assert bytes(view) == data[offs[frames] + 16:offs[frames] + 80]
        for i, (o, c) in enumerate(zip(batch.offsets.tolist(), batch.caplens.tolist())):
            at = offs[frames + i] + 16
            assert c == caps[frames + i]
            assert bytes(batch.data[o:o + c]) == data[at:at + c]
        frames += len(batch)
    assert frames == len(caps)
    reader.close()


def test_parts_give_the_frames_of_a_whole_read(tmp_path):
    caps = ([1514] * 45 + [66]) * 60 + [200, 1514] * 50
    data = pcap(caps, seed=5)
    path = tmp_path / "cap.pcap"
    path.write_bytes(data)
    offs = offsets(data)

    def frames(reader):
        out = []
        for b in reader.batches():
            out += [(b.first_frame + i, bytes(b.data[o:o + c]))
                    for i, (o, c) in enumerate(zip(b.offsets.tolist(), b.caplens.tolist()))]
        reader.close()
        return out

    whole = frames(open_capture(str(path), chunk_size=1 << 16))
    cut = 1500
    parts = frames(open_capture(str(path), chunk_size=1 << 16, stop=offs[cut]))
    parts += frames(open_capture(str(path), chunk_size=1 << 16, start=offs[cut],
                                 first_frame=cut + 1))
    assert parts == whole and len(whole) == len(caps)


def test_no_map_outlives_its_views(tmp_path):
    """A part of a file (its maps not aligned to pages at their ends) read to its end with
    no batch kept leaves no map of the file behind, also while the reader is open."""
    import gc

    caps = ([1514] * 45 + [66]) * 200
    data = pcap(caps, seed=4)
    path = tmp_path / "part.pcap"
    path.write_bytes(data)
    offs = offsets(data)
    reader = open_capture(str(path), chunk_size=1 << 20, start=offs[777], first_frame=778)
    frames = 0
    for batch in reader.batches():
        frames += len(batch)
    del batch
    gc.collect()
    assert frames == len(caps) - 777
    assert _maps_of(path)[0] == 0
    reader.close()
