"""The one exception family fedfs raises, with messages written for people.

errno is chosen only at the FUSE boundary (fedfs/fs.py), from the class of the
error; everywhere else code raises one of these with a sentence that says what
went wrong and what to do.
"""


class FedfsError(Exception):
    """Base of every error fedfs reports to a person."""


class ConfigError(FedfsError):
    """The configuration file is invalid; the message names file, key and valid values."""


class StoreError(FedfsError):
    """The object store failed or refused a request."""


class NotFound(StoreError):
    """The object or bucket does not exist."""


class AccessDenied(StoreError):
    """The object store refused our credentials for this request."""


class Unavailable(StoreError):
    """The object store could not be reached or kept failing after retries."""


class StoreRefused(StoreError):
    """The object store will never accept this request as it is (a key it refuses, too long).

    Retrying cannot help: a file whose upload is refused is kept aside (see
    fedfs/data/flusher.py), never retried forever.
    """


class TooLarge(StoreError):
    """An object far larger than what it should be (a policy log record); not read."""


class PreconditionFailed(StoreError):
    """A conditional request lost: somebody else changed the object first."""


class CacheFull(FedfsError):
    """The cache directory has no room left for more dirty data."""


class PolicyError(FedfsError):
    """A grant, principal, path or ACL is invalid; the message says what would be valid."""


class IdentityError(FedfsError):
    """The identity source is configured wrongly (LDAP url, base DN, filters, timeouts)."""


class AuditError(FedfsError):
    """An audit record, chain or signing key is malformed or cannot be used."""


class Stale(StoreError):
    """The object changed in the store while a file handle still refers to the old version."""


class TreeError(FedfsError):
    """An operation that the tree's rules refuse (the kind of refusal picks the errno)."""


class AlreadyExists(TreeError):
    pass


class NotEmpty(TreeError):
    pass


class IsDirectory(TreeError):
    pass


class NotDirectory(TreeError):
    pass


class NotPermitted(TreeError):
    """Refused by design: hard links, device nodes, changing a bucket root."""


class NotSupported(TreeError):
    """An attribute namespace or flag fedfs does not implement."""


class CrossBucket(TreeError):
    """A rename between two buckets (they are separate filesystems to POSIX tools)."""


class NoAttribute(TreeError):
    pass


class NoSpace(TreeError):
    """Metadata that does not fit in an object's user metadata (2 KiB in S3)."""
