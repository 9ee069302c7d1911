"""Random trees, chmods and grants on a real mount: each user can do what the rule says.

Each example builds a small tree under its own directory (random creation modes, some
files and directories in the group fedfs-lab), then applies random chmods, shares and
unshares (user, group and team principals; read and write) in two rounds. After each
round bob, carol and mallory stat, open, list and ask access(2) for every path through
the mount, each from one process of its own uid and groups, and the answers must be
what the model of docs/SEMANTICS.md "Sharing" (tests/reach_model.py) says: the first
round on caches the kernel never filled for them, the second on the caches the first
round left. Derandomized and bounded, so every run checks the same examples.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedfs.policy.engine import ObjectMeta
from fedfs.policy.model import Grant, Level, Principal
from tests import reach_model
from tests.integration.sharing.test_sharing import fedfs, ok
from tests.reach_model import Person, Tree
from tests.support import Mount, UnixUser, ensure_group

TEMPLATE = {  # relative path -> is a directory
    "p": True,
    "p/s": True,
    "p/s/f": False,
    "p/s/g": False,
    "p/s/d": True,
    "p/s/d/h": False,
    "p/t": True,
    "p/t/i": False,
    "p/x": False,
    "q": True,
    "q/y": False,
}
DIR_MODES = (0o700, 0o711, 0o750, 0o755, 0o770)
FILE_MODES = (0o600, 0o640, 0o644, 0o660, 0o700)

AGENT = r"""
import json, os, socket, sys

def probe(path, is_dir):
    got = {}
    try:
        os.stat(path)
        got["stat"] = True
    except OSError:
        got["stat"] = False
    try:
        if is_dir:
            os.listdir(path)
        else:
            with open(path, "rb") as f:
                f.read(1)
        got["r"] = True
    except OSError:
        got["r"] = False
    got["w"] = os.access(path, os.W_OK)
    got["x"] = os.access(path, os.X_OK) if is_dir else False
    return got

def control(sock_path, op, args):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock_path)
        s.sendall((json.dumps({"v": 1, "op": op, "args": args}) + "\n").encode())
        return json.loads(s.makefile().readline())

for line in sys.stdin:
    req = json.loads(line)
    try:
        if req["op"] == "make":
            os.umask(0)
            for path, is_dir, mode, gid in req["items"]:
                if is_dir:
                    os.mkdir(path, mode)
                else:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                    os.write(fd, b"data\n")
                    os.close(fd)
                if gid is not None:
                    os.chown(path, -1, gid)
            out = None
        elif req["op"] == "chmod":
            out = os.chmod(req["path"], req["mode"])
        elif req["op"] == "control":
            out = control(req["socket"], req["name"], req["args"])
        else:
            out = {p: probe(p, d) for p, d in req["paths"]}
        print(json.dumps({"ok": True, "result": out}), flush=True)
    except Exception as e:
        print(json.dumps({"ok": False, "error": repr(e)}), flush=True)
"""


class Agent:
    """One process running as a user (its uid, gid and groups) that makes file calls on request."""

    def __init__(self, user: UnixUser) -> None:
        self.user = user
        self.proc = subprocess.Popen(
            [sys.executable, "-c", AGENT],
            user=user.uid,
            group=user.gid,
            extra_groups=list(user.groups),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LC_ALL": "C"},
        )

    def ask(self, **request: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        assert answer["ok"], f"{self.user.name}: {request}: {answer['error']}"
        return answer["result"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(10)


@dataclass(frozen=True)
class Chmod:
    path: str
    mode: int


@dataclass(frozen=True)
class Share:
    path: str
    principal: str
    level: Level


@dataclass(frozen=True)
class Unshare:
    path: str
    principal: str


Op = Chmod | Share | Unshare


@dataclass
class Example:
    """One example's tree as the model keeps it, and the grants in force."""

    tree: Tree
    grants: dict[tuple[str, str], Grant] = field(default_factory=dict)


paths = st.sampled_from(sorted(TEMPLATE))
PRINCIPALS = ("user:fedfs-bob", "user:fedfs-carol", "user:fedfs-mallory", "group:fedfs-lab")
operations = st.one_of(
    paths.flatmap(  # modes fit for the kind of object: the owner keeps search on her directories
        lambda p: st.builds(
            Chmod, st.just(p), st.sampled_from(DIR_MODES if TEMPLATE[p] else FILE_MODES)
        )
    ),
    st.builds(
        Share,
        paths,
        st.sampled_from((*PRINCIPALS, "team:crew")),
        st.sampled_from((Level.READ, Level.WRITE)),
    ),
    st.builds(Unshare, paths, st.sampled_from((*PRINCIPALS, "team:crew"))),
)
creations = st.fixed_dictionaries(
    {
        rel: st.tuples(
            st.sampled_from(DIR_MODES if is_dir else FILE_MODES), st.sampled_from((False, True))
        )
        for rel, is_dir in TEMPLATE.items()
    }
)


def test_random_trees_chmods_and_grants_give_each_user_what_the_rule_says(
    make_mount: Any,
    bucket: str,
    alice: UnixUser,
    bob: UnixUser,
    carol: UnixUser,
    mallory: UnixUser,
) -> None:
    lab = ensure_group("fedfs-lab", 2911, [alice, bob, mallory])
    m: Mount = make_mount(
        [(bucket, f"user:{alice.name}")], top="[fs]\nattr_timeout = 30\nentry_timeout = 30"
    )
    root = m.path(bucket)
    socket_path = os.getxattr(m.mountpoint, "user.fedfs.socket").decode()
    ok(fedfs(alice, "team", "create", "crew", "--mount", root))
    ok(fedfs(alice, "team", "add", "crew", carol.name, mallory.name, "--mount", root))
    people = {
        bob.name: (Person(bob.name, bob.uid, frozenset({bob.gid, lab})), bob.in_groups(lab)),
        carol.name: (
            Person(carol.name, carol.uid, frozenset({carol.gid}), frozenset({"crew"})),
            carol,
        ),
        mallory.name: (
            Person(mallory.name, mallory.uid, frozenset({mallory.gid, lab}), frozenset({"crew"})),
            mallory.in_groups(lab),
        ),
    }
    groups = {"fedfs-lab": lab}
    owner = Agent(alice.in_groups(lab))
    agents = {name: Agent(user) for name, (_, user) in people.items()}
    counter = iter(range(10**6))
    stats = {"examples": 0, "checks": 0, "granted": 0, "closed": 0, "seconds": 0.0}

    def fpath(rel: str, ex: str) -> str:
        return f"/{bucket}/{ex}/{rel}"

    def apply(example: Example, ex: str, op: Op) -> None:
        target = root / ex / op.path
        path = fpath(op.path, ex)
        if isinstance(op, Chmod):
            # The rule decides from what `ls -l` and getfacl show the owner just before.
            shown = stat.S_IMODE(os.stat(target).st_mode)
            try:
                os.getxattr(target, "system.posix_acl_access")
                has_acl = True
            except OSError:
                has_acl = False
            owner.ask(op="chmod", path=str(target), mode=op.mode)
            meta = example.tree.metas[path]
            example.tree.metas[path] = reach_model.chmod(meta, shown, has_acl, op.mode)
        elif isinstance(op, Share):
            answer = owner.ask(
                op="control",
                socket=socket_path,
                name="share",
                args={"path": path, "principal": op.principal, "level": str(op.level)},
            )
            assert answer["ok"], answer
            example.grants[(path, op.principal)] = Grant(
                path, Principal.parse(op.principal), op.level, alice.name, 0
            )
        elif (path, op.principal) in example.grants:
            answer = owner.ask(
                op="control",
                socket=socket_path,
                name="unshare",
                args={"path": path, "principal": op.principal},
            )
            assert answer["ok"], answer
            del example.grants[(path, op.principal)]

    def check(example: Example, ex: str, round_: str) -> None:
        probes = [(str(root / ex / rel), is_dir) for rel, is_dir in TEMPLATE.items()]
        probes.insert(0, (str(root / ex), True))
        wrong = []
        for name, (person, _) in people.items():
            seen = agents[name].ask(op="probe", paths=probes)
            for (local, is_dir), fs_path in zip(
                probes, [f"/{bucket}/{ex}", *(fpath(r, ex) for r in TEMPLATE)], strict=True
            ):
                rights = reach_model.rights(
                    example.tree, example.grants.values(), groups, person, fs_path, time.time()
                )
                want = {
                    "stat": rights is not None,
                    "r": bool(rights and rights & 4),
                    "w": bool(rights and rights & 2),
                    "x": bool(is_dir and rights and rights & 1),
                }
                stats["checks"] += 1
                alone = reach_model.rights(example.tree, [], groups, person, fs_path, 0)
                stats["granted"] += rights != alone  # grants (and their ways) changed it
                stats["closed"] += rights == 0 and alone != 0  # reachable, and closed to them
                if seen[local] != want:
                    wrong.append(
                        f"{round_}: {name} on {fs_path}: the rule says {want}, saw {seen[local]}"
                    )
        assert not wrong, "\n".join(wrong)

    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(creations, st.lists(operations, min_size=1, max_size=10), st.integers(0, 10))
    def example(made: dict[str, tuple[int, bool]], ops: list[Op], split: int) -> None:
        started = time.monotonic()
        ex = f"ex{next(counter)}"
        base = f"/{bucket}/{ex}"
        metas = {
            f"/{bucket}": ObjectMeta(alice.uid, alice.gid, 0o775),
            base: ObjectMeta(alice.uid, alice.gid, 0o755),
        }
        items: list[tuple[str, bool, int, int | None]] = [(str(root / ex), True, 0o755, None)]
        for rel, is_dir in TEMPLATE.items():
            mode, in_lab = made[rel]
            metas[fpath(rel, ex)] = ObjectMeta(alice.uid, lab if in_lab else alice.gid, mode)
            items.append((str(root / ex / rel), is_dir, mode, lab if in_lab else None))
        dirs = frozenset({f"/{bucket}", base, *(fpath(r, ex) for r, d in TEMPLATE.items() if d)})
        example_ = Example(Tree(metas, dirs))
        owner.ask(op="make", items=items)
        for op in ops[:split]:
            apply(example_, ex, op)
        check(example_, ex, "fresh caches")
        for op in ops[split:]:
            apply(example_, ex, op)
        check(example_, ex, "warm caches")
        for path, principal in list(example_.grants):
            apply(example_, ex, Unshare(path[len(base) + 1 :], principal))
        stats["examples"] += 1
        stats["seconds"] += time.monotonic() - started

    try:
        example()
    finally:
        for agent in (owner, *agents.values()):
            agent.close()
    print(
        f"{stats['examples']} examples, {stats['checks']} checks ({stats['granted']} changed by "
        f"grants, {stats['closed']} closed beside a way through), "
        f"{stats['seconds'] / max(1, stats['examples']):.2f} s per example"
    )
