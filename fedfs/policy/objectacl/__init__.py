"""The object store's access control and the POSIX view as one policy (docs/OBJECT_ACL.md)."""
