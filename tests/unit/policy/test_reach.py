"""The policy engine against the model of docs/SEMANTICS.md "Sharing" (tests/reach_model.py).

Random small trees of modes and owning groups, then random sequences of chmods, shares
(user, group, team; read, write; some already expired) and unshares, applied in order
through the real chmod rule (policy/mask.py). For each person, the kernel's ACL check
(acl.permits) runs over the views the engine gives every directory on the way and the
object; what it allows must be what the model says, bit by bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from fedfs.policy import mask
from fedfs.policy.acl import R, W, X, permits
from fedfs.policy.engine import ObjectMeta, PolicyEngine, PosixView
from fedfs.policy.model import Grant, Identities, Level, Principal, Team
from tests import reach_model
from tests.reach_model import Person, Tree

NOW = 1_700_000_000.0
ALICE, BOB, CAROL, MALLORY, DAVE, EVE, FRANK = 1001, 1002, 1003, 1004, 1005, 1006, 1007
ALICE_GROUP, LAB = 1001, 3000

PEOPLE = (
    Person("alice", ALICE, frozenset({ALICE_GROUP})),  # owns everything
    Person("bob", BOB, frozenset({BOB, LAB}), frozenset({"labteam"})),
    Person("carol", CAROL, frozenset({CAROL, ALICE_GROUP}), frozenset({"crew"})),
    Person("mallory", MALLORY, frozenset({MALLORY, LAB}), frozenset({"crew"})),
    Person("dave", DAVE, frozenset({DAVE, LAB})),  # named nowhere: only his group counts
    Person("eve", EVE, frozenset({EVE, ALICE_GROUP})),  # only in the owning group
)
# In two groups and named nowhere: the kernel checks group entries without knowing which
# group let him in, so he may get less than the rule says (docs/SEMANTICS.md); more only
# what "other" gets where his owning group's bits give him less than that.
FRANK_ = Person("frank", FRANK, frozenset({FRANK, LAB, ALICE_GROUP}))
BY_NAME = {p.name: p for p in PEOPLE}
GROUPS = {"alice": ALICE_GROUP, "lab": LAB}
TEAMS = (
    Team("crew", gid=70001, members=frozenset({"carol", "mallory"}), owners=frozenset()),
    # backed by the group lab: its members hold its grants too (as a GROUP entry)
    Team("labteam", gid=70002, members=frozenset({"bob"}), owners=frozenset(), group="lab"),
)
BACKING = {"labteam": "lab"}
PRINCIPALS = (
    "user:bob",
    "user:carol",
    "user:mallory",
    "group:lab",
    "team:crew",
    "team:labteam",
    "group:alice",
)

DIRS = ("/b", "/b/p", "/b/p/s", "/b/p/s/d", "/b/p/t", "/b/q")
FILES = ("/b/p/s/f", "/b/p/s/g", "/b/p/s/d/h", "/b/p/t/i", "/b/p/x", "/b/q/y", "/b/z")
PATHS = DIRS + FILES
# Modes as people set them (the group at least as much as others).
DIR_MODES = (0o700, 0o710, 0o711, 0o750, 0o755, 0o770, 0o775)
FILE_MODES = (0o600, 0o640, 0o644, 0o660, 0o664, 0o700, 0o750, 0o755)


@dataclass(frozen=True)
class Chmod:
    path: str
    mode: int
    by_creator: bool = True  # from the process that created the object (cp -p) or a shell


@dataclass(frozen=True)
class Share:
    path: str
    principal: str
    level: Level
    expired: bool


@dataclass(frozen=True)
class Unshare:
    path: str
    principal: str


@dataclass
class World:
    """What the owner did, kept twice: as fedfs stores it and as the model says."""

    tree: Tree
    model_tree: Tree
    grants: dict[tuple[str, str], Grant] = field(default_factory=dict)

    def engine(self) -> PolicyEngine:
        return PolicyEngine(self.grants.values(), TEAMS, identities(self.grants.values()))

    def view(self, engine: PolicyEngine, path: str) -> PosixView:
        meta = self.tree.metas[path]
        above = [self.tree.metas[a] for a in reach_model.ancestors(path)]
        return engine.view(path, meta, self.tree.is_dir(path), NOW, lambda: above)

    def apply(self, op: Chmod | Share | Unshare) -> None:
        if isinstance(op, Chmod):
            if op.path == "/b":
                return  # a bucket root's mode comes from the config
            meta, mine = self.tree.metas[op.path], self.model_tree.metas[op.path]
            shown = self.view(self.engine(), op.path)  # what `ls -l` shows the owner
            has_acl = shown.acl_access is not None
            stored = mask.chmod(
                meta.mode,
                meta.explicit_mask,
                shown.mode,
                has_acl,
                op.mode,
                by_creator=op.by_creator,
            )
            self.tree.metas[op.path] = ObjectMeta(
                meta.uid, meta.gid, stored.mode, stored.explicit_mask
            )
            self.model_tree.metas[op.path] = reach_model.chmod(
                mine, shown.mode, has_acl, op.mode, op.by_creator
            )
        elif isinstance(op, Share):
            expires = NOW - 1 if op.expired else None
            grant = Grant(op.path, Principal.parse(op.principal), op.level, "alice", 0, expires)
            self.grants[(op.path, op.principal)] = grant
        else:
            self.grants.pop((op.path, op.principal), None)


def identities(grants: object) -> Identities:
    """What fedfs looks up (Sharing.rebuild): only the users and groups policy names."""
    named = {g.principal.name for g in grants if g.principal.kind == "user"}  # type: ignore[attr-defined]
    people = [BY_NAME[name] for name in named.union(*(t.members for t in TEAMS))]
    return Identities(
        uids={p.name: p.uid for p in people},
        primary_gids={p.uid: p.uid for p in people},
        gids=dict(GROUPS),
        supplementary={p.uid: p.gids for p in people},
    )


def kernel(world: World, engine: PolicyEngine, person: Person, path: str) -> int | None:
    """What the kernel allows person on path under the engine's views (None: no way there)."""
    for a in reach_model.ancestors(path):
        v = world.view(engine, a)
        if not permits(v.mode, v.acl_access, v.uid, v.gid, person.uid, person.gids, X):
            return None
    v = world.view(engine, path)
    allowed = [
        bit
        for bit in (R, W, X)
        if permits(v.mode, v.acl_access, v.uid, v.gid, person.uid, person.gids, bit)
    ]
    return sum(allowed)


def mismatches(world: World) -> list[str]:
    engine = world.engine()
    found = []
    for person in (*PEOPLE, FRANK_):
        for path in PATHS:
            want = reach_model.rights(
                world.model_tree, world.grants.values(), GROUPS, person, path, NOW, BACKING
            )
            got = kernel(world, engine, person, path)
            if person is FRANK_:
                # never more than the rule, but for what "other" gets where his owning
                # group's bits give him less than that, or what the object's owning group
                # gives him where a group way let him through above (the kernel grants
                # through any group entry that matches: docs/SEMANTICS.md, limits)
                meta = world.model_tree.metas[path]
                other = meta.mode & 7
                owning = (meta.mode >> 3) & 7 if meta.gid in person.gids else 0
                if got is not None and got & ~((want or 0) | other | owning):
                    found.append(f"frank on {path}: the rule allows {want}, the kernel {got}")
            elif want != got:
                found.append(f"{person.name} on {path}: the rule says {want}, the kernel {got}")
    return found


paths = st.sampled_from(PATHS)
operations = st.one_of(
    st.builds(Chmod, paths, st.sampled_from(DIR_MODES + FILE_MODES), st.booleans()),
    st.builds(
        Share,
        st.sampled_from(PATHS[1:]),
        st.sampled_from(PRINCIPALS),
        st.sampled_from((Level.READ, Level.WRITE)),
        st.sampled_from((False, False, False, True)),  # now and then one already expired
    ),
    st.builds(Unshare, paths, st.sampled_from(PRINCIPALS)),
)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[World, list[Chmod | Share | Unshare]]:
    metas = {"/b": ObjectMeta(ALICE, ALICE_GROUP, 0o775)}
    for path in PATHS[1:]:
        modes = DIR_MODES if path in DIRS else FILE_MODES
        gid = draw(st.sampled_from((ALICE_GROUP, ALICE_GROUP, LAB)))  # some chgrp'ed to lab
        metas[path] = ObjectMeta(ALICE, gid, draw(st.sampled_from(modes)))
    world = World(Tree(metas, frozenset(DIRS)), Tree(dict(metas), frozenset(DIRS)))
    return world, draw(st.lists(operations, min_size=1, max_size=12))


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(worlds())
def test_what_each_person_can_do_is_what_the_rule_says(
    case: tuple[World, list[Chmod | Share | Unshare]],
) -> None:
    world, ops = case
    for op in ops:
        world.apply(op)
    assert world.tree.metas == world.model_tree.metas  # the chmod rule stored what it says
    assert mismatches(world) == []


def test_object_shape_gives_the_non_directory_at_its_path_only() -> None:
    from fedfs.policy.model import OBJECT
    from fedfs.policy.reach import bits

    assert bits(Level.WRITE, OBJECT, True, False, False) == R | W
    assert bits(Level.READ, OBJECT, True, False, True) == R | X
    assert bits(Level.WRITE, OBJECT, True, True, True) == 0  # a directory named like it
    assert bits(Level.WRITE, OBJECT, False, False, False) == 0  # a file below that name
    assert bits(Level.WRITE, OBJECT, False, True, True) == 0  # a directory below it
