"""Object-side access control: the object store's bucket policies and the POSIX view as one
policy (docs/OBJECT_ACL.md). `principals` maps users to object-store principals, `export`
computes the bucket-policy statements grants imply, `exporter` keeps each bucket's policy so.
"""
