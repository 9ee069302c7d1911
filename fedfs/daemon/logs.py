"""The daemon's log: to the journal (or stderr) in the foreground, else to a private file.

A log names paths and grantees, so only root reads it, whatever made the file
or its directory: the file is created (and re-created after logrotate moved
it) mode 0600 and an existing one is closed to others; a log directory fedfs
creates, and the default /var/log/fedfs, are made 0750 even without the
tmpfiles entry. A directory the admin chose (--log-file) is left as it is,
but a log file that belongs to another user is refused.

Runs in the daemon's main thread at start-up; logging's handlers lock for
themselves. Imports only events.
"""

from __future__ import annotations

import errno
import io
import logging
import logging.handlers
import os
import stat
from pathlib import Path

from fedfs import events
from fedfs.errors import FedfsError

DEFAULT_LOG_DIR = Path("/var/log/fedfs")
_NOISY = ("botocore", "boto3", "urllib3", "s3transfer")


class PrivateFileHandler(logging.handlers.WatchedFileHandler):
    """A log file only its owner reads; reopened (0600 again) when logrotate moves it.

    If the file cannot be reopened after a rotation (another user planted a file or a
    link at its name in a directory others may write), records go to stderr (the
    journal under systemd) with one line saying why, and the file is tried again at
    each record: logging never raises into the daemon and never writes a planted file.
    """

    _fallback: logging.Handler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.reopenIfNeeded()
            if self.stream is None:  # a reopen failed before: try the name again
                self.stream = self._open()
                self._statstream()
        except (FedfsError, OSError) as e:
            if self._fallback is None:
                self._fallback = events.console_handler()
                self._fallback.setFormatter(self.formatter)
                self._fallback.emit(
                    logging.LogRecord(
                        "fedfs.daemon.logs",
                        logging.ERROR,
                        __file__,
                        0,
                        "cannot reopen the log file after it was moved (%s); logging to "
                        "stderr until it can be",
                        (e,),
                        None,
                    )
                )
            self._fallback.emit(record)
            return
        self._fallback = None
        logging.StreamHandler.emit(self, record)

    def _open(self) -> io.TextIOWrapper:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(self.baseFilename, flags, 0o600)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            raise FedfsError(
                f"{self.baseFilename} is a symbolic link; fedfs does not follow links for its "
                "log (one could point it at another file): name the real file"
            ) from None
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            os.close(fd)
            # Another user's file would let that user read (and fake) the daemon's log.
            raise FedfsError(
                f"{self.baseFilename} belongs to uid {st.st_uid}, so its owner could read the "
                "log; remove it, or choose a log file in a directory only root writes"
            )
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & 0o700)
        return open(fd, "a", encoding=self.encoding or "utf-8", errors=self.errors)


def prepare_log_dir(directory: Path) -> None:
    """Create the log directory 0750; close the default one to others if they may read it."""
    if not directory.exists():
        directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        os.chmod(directory, 0o750)  # mkdir's mode passes through the umask
        return
    if directory.resolve() == DEFAULT_LOG_DIR:
        st = directory.stat()
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o007:
            os.chmod(directory, stat.S_IMODE(st.st_mode) & 0o770)


def setup_logging(level: str = "INFO", logfile: Path | None = None) -> None:
    handler: logging.Handler
    if logfile is not None:
        prepare_log_dir(logfile.parent)
        handler = PrivateFileHandler(logfile)
    else:
        handler = events.console_handler()  # the journal's native protocol under systemd
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
