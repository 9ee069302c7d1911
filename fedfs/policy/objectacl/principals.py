"""Which object-store principal a POSIX user is, and back: [object_acl] principal.

The template ("arn:aws:iam:::user/{user}") is the whole mapping here: a principal
maps back to a user only when it is exactly the template with a valid user name in
place of {user}. Pure; callable from any thread.
"""

from __future__ import annotations

import re

from fedfs.errors import PolicyError
from fedfs.policy.model import validate_name


class PrincipalMap:
    """POSIX user name <-> object-store principal, through the configured template."""

    def __init__(self, template: str | None) -> None:
        self.template = template
        self._pattern: re.Pattern[str] | None = None
        if template is not None and template.count("{user}") == 1:
            before, after = template.split("{user}")
            self._pattern = re.compile(re.escape(before) + "(.+)" + re.escape(after))

    def principal_of(self, user: str) -> str | None:
        """The principal of POSIX user `user`, or None when no template is set."""
        if self.template is None:
            return None
        return self.template.replace("{user}", user)

    def user_of(self, principal: str) -> str | None:
        """The POSIX user name the principal stands for, or None if it is no user's."""
        if self._pattern is None or not isinstance(principal, str):
            return None
        found = self._pattern.fullmatch(principal)
        if found is None:
            return None
        try:
            return validate_name(found.group(1), "user")
        except PolicyError:
            return None
