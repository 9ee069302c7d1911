"""Benchmark: cost of PolicyEngine.view() with 10,000 grants, against references in the same run.

Run: python tests/perf/bench_policy.py [--grants N] [--runs N]. Prints µs per view() call
(median of runs) and its ratio to an empty-policy view and to a dict lookup + stat_result;
then the same files in private project directories (0700), where the holders of grants
below pass through them and the reach rule (policy/reach.py) decides.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable

from fedfs.policy.engine import ObjectMeta, PolicyEngine
from fedfs.policy.model import PRINCIPAL_KINDS, Grant, Identities, Level, Principal, Team

NOW = 1_700_000_000.0


def build_site(n_grants: int, rng: random.Random) -> tuple[list[Grant], list[Team], Identities]:
    """A site of 40 buckets, project/run/output trees, 3,000 users, 300 groups, 200 teams."""
    users = {f"u{i:04d}": 10_000 + i for i in range(3000)}
    groups = {f"g{i:03d}": 20_000 + i for i in range(300)}
    names = list(users)
    teams = [
        Team(
            f"t{i:03d}",
            gid=70_000 + i,
            members=frozenset(rng.sample(names, rng.randint(3, 25))),
            group=f"g{i:03d}" if i % 4 == 0 else None,
        )
        for i in range(200)
    ]
    dirs = []
    for b in range(40):
        for p in range(10):
            dirs.append(f"/bucket{b:02d}/proj{p}")
            for r in range(8):
                dirs.append(f"/bucket{b:02d}/proj{p}/run{r:03d}")
    grants = []
    for i in range(n_grants):
        kind = rng.choices(PRINCIPAL_KINDS, weights=(6, 2, 2))[0]  # user, group, team
        if kind == "user":
            name = rng.choice(names)
        elif kind == "group":
            name = rng.choice(list(groups))
        else:
            name = rng.choice(teams).name
        expires = NOW + 86400 if i % 5 == 0 else (NOW - 1 if i % 17 == 0 else None)
        grants.append(
            Grant(
                rng.choice(dirs),
                Principal(kind, name),
                rng.choice(list(Level)),
                "admin",
                NOW - 3600,
                expires,
            )
        )
    primary = {uid: 100 for uid in users.values()}
    return grants, teams, Identities(users, primary, groups, {})


def per_call_us(fn: Callable[[str], object], paths: list[str], runs: int) -> float:
    """Median over runs of the mean cost of one call, in µs."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        for path in paths:
            fn(path)
        samples.append((time.perf_counter() - start) / len(paths) * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grants", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    rng = random.Random(42)
    grants, teams, identities = build_site(args.grants, rng)
    started = time.perf_counter()
    engine = PolicyEngine(grants, teams, identities)
    build_ms = (time.perf_counter() - started) * 1e3
    empty = PolicyEngine([], [], identities)

    # Files a few levels below shared directories: the ancestor walk sees ~2 grant paths.
    paths = [
        f"/bucket{rng.randrange(40):02d}/proj{rng.randrange(10)}/run{rng.randrange(8):03d}"
        f"/out/day{rng.randrange(30):02d}/f{i}.nc"
        for i in range(20_000)
    ]
    meta = ObjectMeta(uid=0, gid=0, mode=0o640)
    inodes = {path: (0o100640, i, 0, 1, 0, 0, 4096, NOW, NOW, NOW) for i, path in enumerate(paths)}
    open_dir = ObjectMeta(uid=0, gid=0, mode=0o755)
    private_dir = ObjectMeta(uid=0, gid=0, mode=0o700)
    open_above = {path: [open_dir] * (path.count("/") - 1) for path in paths}
    # the project directory (second level) private, the others open
    private_above = {
        path: [open_dir, private_dir] + [open_dir] * (path.count("/") - 3) for path in paths
    }

    def with_grants(path: str) -> object:
        return engine.view(path, meta, False, NOW, lambda: open_above[path])

    def without_grants(path: str) -> object:
        return empty.view(path, meta, False, NOW, lambda: open_above[path])

    def in_private_dirs(path: str) -> object:
        return engine.view(path, meta, False, NOW, lambda: private_above[path])

    def stat_lookup(path: str) -> object:
        return os.stat_result(inodes[path])

    # Entries beyond USER_OBJ, GROUP_OBJ, MASK and OTHER are the named ones grants produced.
    acls = [engine.view(p, meta, False, NOW, lambda p=p: open_above[p]).acl_access for p in paths]
    named = [(len(acl) - 4) // 8 - 4 if acl else 0 for acl in acls]
    view_us = per_call_us(with_grants, paths, args.runs)
    empty_us = per_call_us(without_grants, paths, args.runs)
    stat_us = per_call_us(stat_lookup, paths, args.runs)
    private_us = per_call_us(in_private_dirs, paths, args.runs)

    shared = len({grant.path for grant in grants})
    print(f"grants: {len(grants):,} on {shared:,} paths, engine built in {build_ms:.0f} ms")
    print(f"named ACL entries per view: median {statistics.median(named):.0f}, max {max(named)}")
    print(f"view() with grants : {view_us:6.2f} µs/call")
    print(f"view() empty policy: {empty_us:6.2f} µs/call  (ratio {view_us / empty_us:.1f}x)")
    print(f"dict + stat_result : {stat_us:6.2f} µs/call  (ratio {view_us / stat_us:.1f}x)")
    print(f"view() in 0700 project dirs: {private_us:6.2f} µs/call  (reach rule decides)")


if __name__ == "__main__":
    main()
