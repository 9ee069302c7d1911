"""Who a POSIX user is on the object store, and back: `PrincipalMap`.

Owns the mapping of `[object_acl]`: a template (`principal = "arn:aws:iam:::user/{user}"`,
`{user}` the POSIX user name) or an LDAP attribute of the user (`ldap_attribute`) that
holds the principal. A principal that would read as a wildcard in a bucket policy is
never used. The reverse answers only for a user the identity source knows.

Lookups may block (the identity source: NSS or LDAP): call them from a worker thread.
Thread-safe (the sources are). Calls the identity layer only.
"""

from __future__ import annotations

import logging
import re

from fedfs.config import ObjectAclConfig
from fedfs.errors import ConfigError, PolicyError
from fedfs.identity.source import IdentitySource, UserAttributes
from fedfs.policy.model import validate_name

log = logging.getLogger(__name__)

_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
# A principal fedfs writes into a statement: no wildcard, no policy variable, no control
# character, and a sane length (an IAM ARN is at most 2048 characters).
_UNSAFE = re.compile(r"[*?\x00-\x1f\x7f]|\$\{")
_MAX = 2048


class PrincipalMap:
    """POSIX user name <-> object-store principal string, as `[object_acl]` says."""

    def __init__(self, cfg: ObjectAclConfig, identity: IdentitySource) -> None:
        self.identity = identity
        self.template = cfg.principal
        self.attribute = cfg.ldap_attribute
        if self.template is not None:
            self._before, _, self._after = self.template.partition("{user}")
        elif self.attribute is not None:
            if not _ATTRIBUTE.fullmatch(self.attribute):
                raise ConfigError(
                    f"[object_acl] ldap_attribute {self.attribute!r} is not an LDAP attribute "
                    "name (letters, digits and '-', starting with a letter), e.g. description"
                )
            if not isinstance(identity, UserAttributes):
                raise ConfigError(
                    '[object_acl] ldap_attribute needs [identity] source = "ldap"; '
                    "or set principal instead"
                )
        else:
            raise ConfigError(
                "[object_acl] needs principal (a template such as "
                '"arn:aws:iam:::user/{user}") or ldap_attribute'
            )

    def principal_of(self, user: str) -> str | None:
        """The principal of a POSIX user name, or None if it has none fedfs may write."""
        if self.template is not None:
            principal: str | None = self._before + user + self._after
        else:
            assert self.attribute is not None and isinstance(self.identity, UserAttributes)
            principal = self.identity.user_attribute(user, self.attribute)
        if principal is None or not principal or len(principal) > _MAX:
            return None
        if _UNSAFE.search(principal):
            log.warning(
                "the object-store principal %r of user %s holds a wildcard or a control "
                "character; its grants are not exported",
                principal,
                user,
            )
            return None
        return principal

    def user_of(self, principal: str) -> str | None:
        """The POSIX user name whose principal this is, or None (no such user here, or a
        principal with a wildcard, which stands for many)."""
        if not isinstance(principal, str) or not principal or len(principal) > _MAX:
            return None
        if _UNSAFE.search(principal):  # a pattern stands for many principals, not one user
            return None
        if self.template is not None:
            before, after = self._before, self._after
            if len(principal) <= len(before) + len(after):
                return None
            if not (principal.startswith(before) and principal.endswith(after)):
                return None
            name = principal[len(before) : len(principal) - len(after)]
            try:
                validate_name(name, "user")
            except PolicyError:
                return None
            return name if self.identity.user(name) is not None else None
        assert self.attribute is not None and isinstance(self.identity, UserAttributes)
        found = self.identity.user_with_attribute(self.attribute, principal)
        return found if found is not None and self.identity.user(found) is not None else None
