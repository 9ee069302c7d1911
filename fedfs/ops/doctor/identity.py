"""Doctor's checks of identities: the identity source the mount would use (NSS or
LDAP) answers, and every bucket owner exists in it (or, for a team, in the policy
database).

Blocking lookups in the doctor's only thread. Calls identity (the same source
the daemon would make) and the policy store (read only).
"""

from __future__ import annotations

from fedfs.config import Config
from fedfs.errors import FedfsError
from fedfs.identity.choose import make_identity
from fedfs.ops.doctor.finding import FAIL, OK, SKIP, WARN, Finding
from fedfs.policy.model import Principal
from fedfs.policy.site import SitePolicy
from fedfs.policy.store import PolicyStore


def check_identity(cfg: Config) -> list[Finding]:
    identity = make_identity(cfg)
    results: list[tuple[Principal, str, bool | None]] = []
    for b in cfg.buckets:
        p = Principal.parse(b.owner)
        if p.kind == "user":
            results.append((p, b.name, identity.user(p.name) is not None))
        elif p.kind == "group":
            results.append((p, b.name, identity.group(p.name) is not None))
        else:
            results.append((p, b.name, _team_exists(cfg, p.name)))
    health = identity.health()
    found = []
    if cfg.identity.source == "ldap":
        if health.ok:
            found.append(Finding("identity", OK, f"{health.source} answers"))
        else:
            found.append(
                Finding(
                    "identity",
                    FAIL,
                    f"{health.source}: {health.last_error}",
                    "check that the LDAP server runs and [identity] url, base_dn, bind_dn and "
                    f"password; `ldapsearch -H {cfg.identity.url} -x -b {cfg.identity.base_dn}` "
                    "from this node must answer",
                )
            )
    else:
        found.append(Finding("identity", OK, "NSS (this node's passwd and group, e.g. sssd)"))
    for p, bucket, exists in results:
        check = f"owner {bucket}"
        if p.kind == "team":
            if exists:
                found.append(Finding(check, OK, f"{p} exists in the policy database"))
            else:
                found.append(
                    Finding(
                        check,
                        WARN,
                        f"{p} does not exist yet; until it does, only site admins manage the bucket",
                        f"create it on the mount: fedfs team create {p.name}",
                    )
                )
        elif exists:
            found.append(Finding(check, OK, f"{p} exists ({health.source})"))
        elif not health.ok:
            found.append(Finding(check, SKIP, f"{p}: not checked: the identity source is down"))
        else:
            found.append(
                Finding(
                    check,
                    FAIL,
                    f"no {p.kind} {p.name!r} ({health.source}); fedfs mount refuses to start",
                    f"create the {p.kind}, or correct [[buckets]] owner in {cfg.path} "
                    f"(`getent {'passwd' if p.kind == 'user' else 'group'} {p.name}` must find it)",
                )
            )
    return found


def _team_exists(cfg: Config, team: str) -> bool:
    db = cfg.policy.state_dir / "policy.db"
    if not db.exists():
        return False
    try:
        with PolicyStore(db, SitePolicy.default().team_gids) as store:
            return store.team(team) is not None
    except FedfsError:
        return False  # check_policy reports the damage
