"""The identity source a config names: the node's NSS, or an LDAP directory.

Used by the daemon at start and by `fedfs doctor`, which checks the same
source the mount would use. Builds the source only; lookups happen later,
in the caller's worker threads.
"""

from __future__ import annotations

from fedfs.config import Config
from fedfs.identity.nss import NssIdentity
from fedfs.identity.source import IdentitySource


def make_identity(cfg: Config) -> IdentitySource:
    ident = cfg.identity
    if ident.source == "ldap":
        from fedfs.identity.ldap import LdapIdentity  # ldap3 only where LDAP is configured

        assert ident.url is not None and ident.base_dn is not None
        return LdapIdentity(
            ident.url,
            ident.base_dn,
            ident.bind_dn,
            ident.password,
            timeout=ident.timeout,
            ttl=ident.ttl,
        )
    return NssIdentity()
