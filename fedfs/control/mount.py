"""The parts of a running mount that the control commands read and drive.

`Commands` is handed the daemon, but needs only these parts of it; naming
them here keeps the control layer from importing the daemon, which sits
above it. A type only: nothing to run, no state, no concurrency of its own
(the parts belong to the trio thread, like the commands that use them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from fedfs.audit.chain import AuditTrail
from fedfs.config import Config
from fedfs.data.cache import Cache
from fedfs.data.flusher import Flusher
from fedfs.data.writeback import WriteBack
from fedfs.fuse.operations import Operations
from fedfs.meta.seal import MetadataSeal
from fedfs.policy.log import PolicyLog
from fedfs.policy.objectacl.exporter import Exporter
from fedfs.policy.objectacl.importer import Importer
from fedfs.policy.sharing import Sharing
from fedfs.policy.site import SitePolicy
from fedfs.store.s3 import ObjectStore
from fedfs.tree.inodes import Inodes
from fedfs.tree.listing import Listings
from fedfs.tree.lookup import Lookups
from fedfs.tree.revalidate import Revalidation


class Mount(Protocol):
    cfg: Config
    mountpoint: Path
    started: float  # time.monotonic() at start
    store: ObjectStore
    cache: Cache
    flusher: Flusher
    inodes: Inodes
    lookups: Lookups
    listings: Listings
    revalidation: Revalidation
    writeback: WriteBack
    ops: Operations
    sharing: Sharing
    site: SitePolicy
    trail: AuditTrail
    policy_log: PolicyLog | None  # with a shared policy log ([policy] log_bucket)
    importer: Importer | None  # with [object_acl] importing the buckets' own policies
    exporter: Exporter | None  # grants to bucket policies ([object_acl], a watcher node)
    seal: MetadataSeal  # which ownership metadata is believed ([object_acl]: sealed only)
