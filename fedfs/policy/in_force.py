"""Which stored grants the site policy in force lets apply, and why the others do not.

A grant is checked against the site rules when it is made, but the rules can become
stricter later (a policy file changes, the mount restarts or reloads), and a team can
reach people through the NSS/LDAP group that backs it. So the same rules are applied
again, through every route, each time the engine is rebuilt: a grant whose principal,
whose team's backing group or whose team's size the policy no longer allows does not
apply, and a grant older than `max_grant_lifetime` ends at that age. Grants stay
stored, so a policy that allows them again brings them back.

Pure: no I/O, no clock of its own; the caller passes group members and the time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fedfs.errors import PolicyError
from fedfs.policy.model import Grant, Principal, Team
from fedfs.policy.site import SitePolicy, format_duration

GrantKey = tuple[str, Principal]  # (path, principal): what identifies a stored grant


def key_of(grant: Grant) -> GrantKey:
    return (grant.path, grant.principal)


@dataclass(frozen=True)
class InForce:
    """The grants the engine is built from, and the stored ones left out with the reason."""

    grants: list[Grant]
    suspended: dict[GrantKey, tuple[Grant, str]]
    next_end: float | None  # the earliest future end set by max_grant_lifetime, if any


def team_members(team: Team, group_members: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """Everyone a team reaches: its named members and the members its group lists."""
    if team.group is None:
        return team.members
    return team.members | group_members.get(team.group, frozenset())


def check_team(site: SitePolicy, team: Team, group_members: Mapping[str, frozenset[str]]) -> None:
    """Raise PolicyError if the site would not allow sharing with this team as it stands."""
    if team.group is not None:
        try:
            site.check_principal(Principal("group", team.group))
        except PolicyError as e:
            raise PolicyError(
                f"team {team.name} is backed by group:{team.group}, and {e}"
            ) from None
    site.check_team_size(team.name, len(team_members(team, group_members)))


def in_force(
    site: SitePolicy,
    grants: Iterable[Grant],
    teams: Mapping[str, Team],
    group_members: Mapping[str, frozenset[str]],
    now: float,
    exempt: frozenset[GrantKey] = frozenset(),
) -> InForce:
    """Split grants into those the site policy lets apply now and those it does not.

    `exempt` grants are not checked: the ones a bucket's configured owner implies,
    which the admin wrote in the mount's config rather than a sharer in a grant.
    """
    kept: list[Grant] = []
    suspended: dict[GrantKey, tuple[Grant, str]] = {}
    next_end: float | None = None
    limit = site.max_grant_lifetime
    for grant in grants:
        if key_of(grant) in exempt:
            kept.append(grant)
            continue
        try:
            site.check_principal(grant.principal)
            team = teams.get(grant.principal.name) if grant.principal.kind == "team" else None
            if team is not None:
                check_team(site, team, group_members)
        except PolicyError as e:
            suspended[key_of(grant)] = (grant, str(e))
            continue
        if limit is not None:
            end = grant.granted_at + limit
            if grant.expires is None or grant.expires > end:
                if now >= end:
                    why = (
                        f"it is older than this site's max_grant_lifetime of "
                        f"{format_duration(limit)}; share again to renew it"
                    )
                    suspended[key_of(grant)] = (grant, why)
                    continue
                grant = dataclasses.replace(grant, expires=end)
                next_end = end if next_end is None else min(next_end, end)
        kept.append(grant)
    return InForce(kept, suspended, next_end)
