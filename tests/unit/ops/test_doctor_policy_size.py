"""Doctor's warnings about the bucket policy's size budget: a budget above what AWS takes
on AWS, and an owner whose own statements leave grants no room."""

from __future__ import annotations

import json
from pathlib import Path

from fedfs.config import Config, load
from fedfs.ops.doctor.bucket_policy import aws_limit, owners_room
from fedfs.ops.doctor.finding import WARN

BASE = """
[store]
{endpoint}region = "us-east-1"

[cache]
dir = "/var/cache/fedfs"
size = "200GiB"

[[buckets]]
name = "climate"
owner = "user:alice"

[object_acl]
principal = "arn:aws:iam:::user/{{user}}"
{extra}
"""


def config(tmp_path: Path, endpoint: str | None, extra: str = "") -> Config:
    text = BASE.format(endpoint=f'endpoint = "{endpoint}"\n' if endpoint else "", extra=extra)
    (tmp_path / "c.toml").write_text(text)
    return load(tmp_path / "c.toml")


def test_on_aws_a_budget_over_20_kb_is_a_warning_with_the_fix(tmp_path: Path) -> None:
    [finding] = aws_limit(config(tmp_path, None))
    assert finding.status == WARN and "max_policy_bytes = 20000" in finding.fix
    assert aws_limit(config(tmp_path, None, "max_policy_bytes = 20000")) == []
    assert aws_limit(config(tmp_path, "http://rgw:8080")) == []


def test_an_owner_whose_statements_fill_the_budget_is_warned_about(tmp_path: Path) -> None:
    cfg = config(tmp_path, "http://rgw:8080", "max_policy_bytes = 2000")
    statement = {
        "Sid": "Owner",
        "Effect": "Allow",
        "Principal": {"AWS": ["arn:aws:iam:::user/erin"]},
        "Action": ["s3:GetObject"],
        "Resource": ["arn:aws:s3:::climate/" + "x" * 100 + "/*"],
    }
    small = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    big = json.dumps({"Version": "2012-10-17", "Statement": [statement] * 20})
    assert owners_room(cfg, "climate", small) == []
    assert owners_room(cfg, "climate", None) == []
    [finding] = owners_room(cfg, "climate", big)
    assert finding.status == WARN and "of the 2000 bytes" in finding.found
