"""Object metadata in s3fs's names: times, special files and their device numbers."""

from __future__ import annotations

import stat
from dataclasses import dataclass

from fedfs.meta.inode import Inode, Kind
from fedfs.meta.object_meta import apply_info, metadata_for, s3fs_time
from fedfs.meta.seal import MetadataSeal
from fedfs.store.s3 import ObjectInfo

OPEN = MetadataSeal(None, required=False)  # no [object_acl]: metadata as written


@dataclass
class _Owner:
    uid: int = 1000
    gid: int = 1000


def _read(meta: dict[str, str]) -> Inode[object]:
    inode: Inode[object] = Inode(2, 1, "f", "b", "f", Kind.FILE)
    apply_info(inode, ObjectInfo("f", 0, "e", 1_700_000_000.0, meta), {"b": _Owner()}, OPEN)  # type: ignore[arg-type]
    return inode


def test_s3fs_times_with_nanoseconds_are_read_exactly() -> None:
    inode = _read({"mode": str(0o100644), "mtime": "1500000000.123456789", "atime": "1400000000"})
    assert inode.mtime_ns == 1_500_000_000_123_456_789
    assert inode.atime_ns == 1_400_000_000 * 10**9
    assert _read({"mtime": "1500000000"}).atime_ns is None  # never set: reads as mtime


def test_atime_set_explicitly_round_trips_in_s3fs_form() -> None:
    inode = _read({"mode": str(0o100644), "mtime": "1500000000"})
    inode.atime_ns = 1_000_000_000_000_000_007
    meta = metadata_for(inode)
    assert meta["atime"] == "1000000000.000000007" == s3fs_time(inode.atime_ns)
    assert _read(meta).atime_ns == inode.atime_ns


def test_special_files_keep_their_type_and_device_number() -> None:
    dev = _read({"mode": str(stat.S_IFCHR | 0o600), "rdev": str(259)})
    assert (dev.kind, dev.rdev, dev.is_special) == (Kind.CHAR_DEVICE, 259, True)
    assert metadata_for(dev)["mode"] == str(stat.S_IFCHR | 0o600)
    assert metadata_for(dev)["rdev"] == "259"
    assert _read({"mode": str(stat.S_IFIFO | 0o640)}).kind is Kind.FIFO
    assert _read({"mode": str(stat.S_IFSOCK | 0o755)}).kind is Kind.SOCKET
    # a rdev on a plain file means nothing; a mode without a type is a file (s3sync)
    assert _read({"mode": str(0o644), "rdev": "5"}).rdev == 0
    assert _read({"mode": str(0o644)}).kind is Kind.FILE


def test_metadata_the_kernel_cannot_hold_is_ignored_as_if_absent() -> None:
    huge = "9" * 20
    for field, value in (
        ("mode", huge),
        ("mode", "-1"),
        ("uid", "-1"),
        ("uid", "4294967295"),
        ("gid", huge),
        ("mtime", huge),
        ("mtime", "1e400"),
        ("uid", "nan"),
        ("uid", "inf"),
    ):
        inode = _read({"mode": str(0o100640), "uid": "7", "gid": "8", field: value})
        defaults = _read({"mode": str(0o100640), "uid": "7", "gid": "8"})
        if field == "mode":
            assert inode.mode == 0o664, (field, value)  # the default for a file
        elif field == "uid":
            assert inode.uid == 1000, (field, value)  # the bucket owner's
        elif field == "gid":
            assert inode.gid == 1000, (field, value)
        else:
            assert inode.mtime_ns == 1_700_000_000 * 10**9, (field, value)  # LastModified
        assert (inode.size, inode.kind) == (defaults.size, defaults.kind)


def test_only_user_xattrs_from_object_metadata_are_kept() -> None:
    import base64
    import json
    from urllib.parse import quote

    def enc(v: bytes) -> str:
        return base64.b64encode(v).decode()

    raw = {
        "user.ok": enc(b"yes"),
        "system.posix_acl_access": enc(b"\x02\x00\x00\x00"),
        "trusted.x": enc(b"t"),
        "security.selinux": enc(b"s"),
    }
    inode = _read({"mode": str(0o100644), "xattr": quote(json.dumps(raw))})
    assert inode.xattrs == {"user.ok": b"yes"}


def test_what_set_the_owners_limit_round_trips_and_nonsense_is_not_kept() -> None:
    inode = _read({"mode": str(0o100640)})
    inode.explicit_mask, inode.mask_by = 4, "setfacl"
    meta = metadata_for(inode)
    assert meta["fedfs-mask"] == "4" and meta["fedfs-mask-by"] == "setfacl"
    back = _read(meta)
    assert (back.explicit_mask, back.mask_by) == (4, "setfacl")
    assert (
        _read({**meta, "fedfs-mask-by": "\x1b[2Jrm -rf"}).mask_by is None
    )  # written with S3 tools
    assert _read({"fedfs-mask-by": "chmod"}).mask_by is None  # no limit: nothing set it
