"""A bucket policy observed by the watcher node reaches a node that does not poll, through
the shared policy log. moto stores bucket policies (enforcement is RGW's, tested in
tests/integration/objectacl): here only the mount's view is checked, with real uids."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tests.integration.nodes.test_multinode import BOUND, Cluster, run
from tests.support import UnixUser, wait_for

ACL = '[object_acl]\nprincipal = "arn:aws:iam:::user/{user}"\npoll_interval = 2\n'


def test_the_watchers_observation_reaches_a_node_that_does_not_poll(
    make_mount: Any, s3: Any, bucket: str, alice: UnixUser, carol: UnixUser, tmp_path: Path
) -> None:
    control = f"ctl-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=control)
    admin_key = tmp_path / "admin.key"
    run("admin", "keygen", admin_key)
    c = Cluster(bucket, control, "policy/", admin_key, make_mount, s3)
    compute = c.add("compute1", f"user:{alice.name}", top=ACL + "watcher = false\n")
    c.add("service1", f"user:{alice.name}", top=ACL + "watcher = true\n")
    root = compute.path(bucket)
    r = alice.run("sh", "-c", f"umask 077 && mkdir {root}/shared && echo s > {root}/shared/a")
    assert r.returncode == 0, r.stderr
    f = root / "shared" / "a"
    assert carol.run("cat", str(f)).returncode != 0

    statement = {
        "Sid": "CarolReadsShared",
        "Effect": "Allow",
        "Principal": {"AWS": [f"arn:aws:iam:::user/{carol.name}"]},
        "Action": ["s3:GetObject"],
        "Resource": [f"arn:aws:s3:::{bucket}/shared/*"],
    }
    s3.put_bucket_policy(
        Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    )
    wait_for(lambda: carol.run("cat", str(f)).returncode == 0, "carol reading on compute1", BOUND)
    status = json.loads(run("status", "--json", root))["object_acl"]
    assert status["watcher"] is False and status["polls"] == 0, status

    s3.delete_bucket_policy(Bucket=bucket)
    wait_for(lambda: carol.run("cat", str(f)).returncode != 0, "carol refused on compute1", BOUND)
