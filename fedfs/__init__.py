"""fedfs: team-controlled object-store buckets as POSIX trees on HPC nodes."""

__version__ = "0.1.0"
