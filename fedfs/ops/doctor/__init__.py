"""`fedfs doctor`: checks one config against the world and says how to fix each problem.

Owns the list of checks an admin runs before (or instead of) guessing: the
config, the endpoint, the credentials, the clock, each bucket and the keys in
it that fedfs cannot show, the daemon's access to the bucket policies ([object_acl]),
the identity source and the bucket owners, the cache directory and its disk, FUSE,
the policy files and database, the audit chain, the metrics outputs, and the
running daemon if its control socket answers. Needs no mount; changes nothing (it
does not even create the cache directory; the bucket policy check writes back the
policy it read). Every S3 request is tried once with short timeouts, so a dead
endpoint costs seconds. Each check gives one `Finding`: OK, WARN or FAIL
(SKIP when what it needs failed first), what was found, and the fix.

One module per area of checks (store, identity, cache, fuse, policy, metrics,
running), each giving `Finding`s; `report` runs them all and prints them.
"""

from fedfs.ops.doctor.cache import check_cache, check_cache_space
from fedfs.ops.doctor.finding import FAIL, OK, SKIP, WARN, Finding
from fedfs.ops.doctor.fuse import check_fuse
from fedfs.ops.doctor.identity import check_identity
from fedfs.ops.doctor.metrics import check_metrics
from fedfs.ops.doctor.policy import check_policy, check_policy_log
from fedfs.ops.doctor.report import report, run
from fedfs.ops.doctor.running import check_daemon
from fedfs.ops.doctor.store import MAX_KEYS, check_clock, check_names, check_store

__all__ = [
    "FAIL",
    "MAX_KEYS",
    "OK",
    "SKIP",
    "WARN",
    "Finding",
    "check_cache",
    "check_cache_space",
    "check_clock",
    "check_daemon",
    "check_fuse",
    "check_identity",
    "check_metrics",
    "check_names",
    "check_policy",
    "check_policy_log",
    "check_store",
    "report",
    "run",
]
