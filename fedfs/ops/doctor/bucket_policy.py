"""Doctor's check that the daemon may read and write each bucket's policy ([object_acl]).

Read is a GetBucketPolicy. Write is proved without changing what the policy allows: the
same document is put back; a bucket without a policy gets, for a moment, one statement
that denies reading a key no one uses, and the policy is deleted again. Blocking; runs
in the doctor's only thread, each request tried once (`quick_store`). Calls the store.
"""

from __future__ import annotations

import json

from fedfs.config import Config
from fedfs.errors import AccessDenied, FedfsError
from fedfs.ops.doctor.finding import FAIL, OK, SKIP, Finding
from fedfs.ops.doctor.store import quick_store

PROBE_KEY = ".fedfs-doctor-probe"


def _fix(cfg: Config, bucket: str) -> str:
    return (
        f"the daemon's key ([store] access_key in {cfg.path}) needs s3:GetBucketPolicy, "
        f"s3:PutBucketPolicy and s3:DeleteBucketPolicy on {bucket!r}: on Ceph RGW make its "
        "user a system user (radosgw-admin user modify --uid=USER --system) or the bucket's "
        "owner; on AWS add them to the key's IAM policy. Or set [object_acl] sync = "
        '"import" to stop exporting grants'
    )


def check_bucket_policies(cfg: Config) -> list[Finding]:
    """One finding per bucket when [object_acl] exports grants; nothing otherwise."""
    if not cfg.object_acl.exports:
        return []
    store = quick_store(cfg)
    found = []
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
    return found


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
