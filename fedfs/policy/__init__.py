"""Share policy: grants, teams and principals, and the POSIX view (mode + ACLs) they produce."""
