"""Every analysis result stays what it was (issue #11): the outputs of ``analyze``,
``conversations`` and ``export`` on every capture we have, compared with the fixtures
tests/golden/make.py wrote from the code before the engine redesign. A change that
alters an output on purpose regenerates them (``python tests/golden/make.py``) and says
why in its commit message. Shared and public captures are skipped where ../shared is absent."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make  # noqa: E402

FIXTURES = sorted(p.relative_to(make.EXPECTED).as_posix()[:-len(".json")]
                  for p in make.EXPECTED.rglob("*.json"))
CAPTURES = make.captures()


def differences(want, got, path="$", out=None, limit=12) -> list[str]:
    """JSON paths where two documents differ (at most ``limit``)."""
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    if isinstance(want, dict) and isinstance(got, dict):
        for k in sorted(set(want) | set(got)):
            if k not in got:
                out.append(f"{path}.{k}: missing")
            elif k not in want:
                out.append(f"{path}.{k}: new = {json.dumps(got[k])[:120]}")
            else:
                differences(want[k], got[k], f"{path}.{k}", out, limit)
    elif isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            out.append(f"{path}: {len(want)} items, now {len(got)}")
        for i, (a, b) in enumerate(zip(want, got)):
            differences(a, b, f"{path}[{i}]", out, limit)
    elif want != got:
        out.append(f"{path}: {json.dumps(want)[:120]} -> {json.dumps(got)[:120]}")
    return out[:limit]


@pytest.mark.parametrize("fixture", FIXTURES)
def test_golden(fixture):
    name, command = fixture.rsplit(".", 1)
    capture = CAPTURES.get(name)
    if capture is None:
        pytest.skip(f"{name} not here (../shared absent)")
    want = json.loads(make.fixture_path(name, command).read_text())
    got = json.loads(json.dumps(make.run_one(capture, command), sort_keys=True))
    diff = differences(want, got)
    assert not diff, f"{command} {name} changed (regenerate with tests/golden/make.py if meant):\n" + "\n".join(diff)


def test_every_capture_has_fixtures():
    missing = [f"{n}.{c}" for n in CAPTURES for c in make.COMMANDS if not make.fixture_path(n, c).exists()]
    assert not missing, f"no golden output for {missing}: run python tests/golden/make.py {' '.join(sorted({m.rsplit('.', 1)[0] for m in missing}))}"


@pytest.mark.parametrize("name", ["lab/store.pcap", "lab/lossy.pcap"])
def test_golden_with_two_jobs(name):
    """--jobs 2 shares connections out between processes: the same analysis."""
    want = json.loads(make.fixture_path(name, "analyze").read_text())
    got = json.loads(json.dumps(make.run_one(CAPTURES[name], "analyze", ["--jobs", "2"]), sort_keys=True))
    diff = differences(want, got)
    assert not diff, "\n".join(diff)
