"""UID names from pydicom's dictionary."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=2048)
def uid_name(uid: str | None) -> str | None:
    """The name pydicom's dictionary gives a UID, or None."""
    if not uid:
        return None
    from pydicom.uid import UID  # here: importing pydicom costs 0.1 s

    try:
        name = UID(uid).name
    except Exception:
        return None
    return name if name and name != uid else None


def load_names() -> None:
    """Import what :func:`uid_name` takes (pydicom), now."""
    import pydicom.uid  # noqa: F401
