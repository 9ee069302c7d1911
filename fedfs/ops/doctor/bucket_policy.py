"""Doctor's check that the daemon may read and write each bucket's policy ([object_acl]).

Read is a GetBucketPolicy. Write is proved without changing what the policy allows: the
same document is put back; a bucket without a policy gets, for a moment, one statement
that denies reading a key no one uses, and the policy is deleted again. Also warns when
`[object_acl] max_policy_bytes` is above what AWS takes (no endpoint: AWS) and when the
owner's statements alone leave no room under it. Blocking; runs in the doctor's only
thread, each request tried once (`quick_store`). Calls the store and objectacl/budget.
"""

from __future__ import annotations

import json

from fedfs.config import Config
from fedfs.errors import AccessDenied, FedfsError
from fedfs.ops.doctor.finding import FAIL, OK, SKIP, WARN, Finding
from fedfs.ops.doctor.store import quick_store
from fedfs.policy.objectacl import budget, export

PROBE_KEY = ".fedfs-doctor-probe"


def _fix(cfg: Config, bucket: str) -> str:
    return (
        f"the daemon's key ([store] access_key in {cfg.path}) needs s3:GetBucketPolicy, "
        f"s3:PutBucketPolicy and s3:DeleteBucketPolicy on {bucket!r}: on Ceph RGW make its "
        "user a system user (radosgw-admin user modify --uid=USER --system) or the bucket's "
        "owner; on AWS add them to the key's IAM policy. If only writing fails, "
        '[object_acl] sync = "import" stops exporting grants (reading the policy, and '
        "s3:GetBucketAcl, the import still needs)"
    )


def check_bucket_policies(cfg: Config) -> list[Finding]:
    """One finding per bucket when [object_acl] exports grants; nothing otherwise."""
    if not cfg.object_acl.exports:
        return []
    store = quick_store(cfg)
    found = aws_limit(cfg)
    for b in cfg.buckets:
        check = f"bucket policy {b.name}"
        try:
            document = store.get_bucket_policy(b.name)
        except AccessDenied as e:
            found.append(Finding(check, FAIL, f"the key may not read it: {e}", _fix(cfg, b.name)))
            continue
        except FedfsError as e:
            found.append(Finding(check, SKIP, f"not checked: {e}"))
            continue
        try:
            if document is not None:
                store.put_bucket_policy(b.name, document)
            else:
                store.put_bucket_policy(b.name, _probe(b.name))
                store.delete_bucket_policy(b.name)
        except AccessDenied as e:
            found.append(
                Finding(
                    check, FAIL, f"the key may read it but not write it: {e}", _fix(cfg, b.name)
                )
            )
            continue
        except FedfsError as e:
            found.append(Finding(check, FAIL, f"writing it failed: {e}", _fix(cfg, b.name)))
            continue
        found.append(Finding(check, OK, "the daemon's key may read and write it"))
        found += owners_room(cfg, b.name, document)
    return found


def aws_limit(cfg: Config) -> list[Finding]:
    """A WARN when the budget is above what AWS takes and the store is AWS (no endpoint)."""
    limit = cfg.object_acl.max_policy_bytes
    if cfg.store.endpoint is not None or limit <= budget.AWS_MAX_BYTES:
        return []
    return [
        Finding(
            "bucket policy size",
            WARN,
            f"[object_acl] max_policy_bytes is {limit}, but AWS refuses a bucket policy "
            "over 20 KB: once grants fill more, every export to that bucket fails",
            f"set max_policy_bytes = {budget.AWS_MAX_BYTES} in [object_acl] of {cfg.path}",
        )
    ]


def owners_room(cfg: Config, bucket: str, document: str | None) -> list[Finding]:
    """A WARN when the owner's own statements leave fedfs's grants no room."""
    try:
        top, present = export.parse(bucket, document)
    except export.UnreadablePolicy:
        return []  # export reports it
    foreign = [s for s in present if not export.is_owned(s)]
    size = export.size_of(export.document_of(top, foreign, []))
    limit = cfg.object_acl.max_policy_bytes
    if size <= limit * 0.9:
        return []
    return [
        Finding(
            f"bucket policy size {bucket}",
            WARN,
            f"the bucket owner's own statements take {size} of the {limit} bytes "
            "([object_acl] max_policy_bytes): few or no grants are exported there",
            "ask the bucket's owner to shorten their statements, or raise max_policy_bytes "
            f"in {cfg.path} as far as the store takes (RGW about 1 MB, AWS 20 KB)",
        )
    ]


def _probe(bucket: str) -> str:
    """A policy that allows nothing: it denies everyone reading a key fedfs never uses."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "fedfsdoctorprobe",
                    "Effect": "Deny",
                    "Principal": {"AWS": ["*"]},
                    "Action": ["s3:GetObject"],
                    "Resource": [f"arn:aws:s3:::{bucket}/{PROBE_KEY}"],
                }
            ],
        }
    )
