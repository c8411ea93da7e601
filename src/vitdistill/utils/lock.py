"""Run folders are owned: one ``train``, ``analyze`` or ``demo`` at a time writes into a folder.

The owner holds an exclusive ``flock`` on ``FOLDER/.vitdistill.lock`` (holding its PID and
command) from before its first write until it ends. A second command into the same folder
fails at once with a one-line error naming the holder. The operating system drops the lock
when the owner dies in any way (kill -9 included), so a stale lock file never blocks a resume.
Taking the lock also claims the folder for the command's kind of output (see
:mod:`vitdistill.utils.markers`): a folder of another kind is refused.
Under torchrun only rank 0 takes the lock (the other ranks are part of the same run).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from vitdistill.errors import UserError
from vitdistill.utils.markers import claim, unclaim_if_empty

LOCK_NAME = ".vitdistill.lock"


class FolderLock:
    """An exclusive lock on a folder; :meth:`release` (or the process ending) frees it."""

    def __init__(self, folder: str | os.PathLike, command: str):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None
        self.created = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            if self.folder.is_symlink() and not self.folder.exists():
                raise UserError(
                    f"{self.folder} is a link to {os.readlink(self.folder)}, which does not exist: "
                    "create it or choose another folder"
                ) from None
            raise UserError(f"cannot create folder {self.folder}: {e.strerror or e}") from None
        self.marked = False
        try:
            while self.fd is None:
                self.fd = self._try_lock(command)
        except OSError:  # a full disk: not even the PID fits
            self._tidy()
            raise
        try:
            self.marked = claim(
                self.folder, command
            )  # a folder of another kind is refused, never overwritten
        except BaseException:
            self.release()
            raise

    def _try_lock(self, command: str) -> int | None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"cannot write into {self.folder}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.read(fd, 200).decode(errors="replace").split()
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise UserError(f"cannot lock {self.path}: {e.strerror or e}") from None
            who = f"vitdistill {holder[1]} (PID {holder[0]})" if len(holder) >= 2 else "another process"
            raise UserError(
                f"{self.folder} is in use by {who}; wait for it to finish or choose another folder"
            ) from None
        try:  # the file may have been removed by a releasing owner between open and flock
            same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {command}\n".encode())
        except OSError:
            os.unlink(self.path)
            os.close(fd)
            raise
        return fd

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        os.close(self.fd)
        self.fd = None
        self._tidy()

    def _tidy(self) -> None:
        if self.marked or self.created:  # a command that failed before writing leaves the folder as it was
            unclaim_if_empty(self.folder, remove_folder=self.created)


def _is_main_rank() -> bool:
    return int(os.environ.get("RANK", "0") or 0) == 0


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, command: str) -> Iterator[FolderLock | None]:
    """Hold ``folder`` for ``command`` for the duration of the block (rank 0 only under torchrun)."""
    lock = FolderLock(folder, command) if _is_main_rank() else None
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


_held: contextvars.ContextVar[contextlib.ExitStack | None] = contextvars.ContextVar("held", default=None)


def releases_folders(fn: Callable) -> Callable:
    """Decorator: folders locked with :func:`hold_folder` inside ``fn`` are released when it ends."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with contextlib.ExitStack() as stack:
            token = _held.set(stack)
            try:
                return fn(*args, **kwargs)
            finally:
                _held.reset(token)

    return wrapper


def hold_folder(folder: str | os.PathLike, command: str) -> None:
    """Lock ``folder`` until the enclosing :func:`releases_folders` function returns or fails."""
    stack = _held.get()
    if stack is None:
        raise RuntimeError("hold_folder() needs an enclosing @releases_folders function")
    stack.enter_context(folder_lock(folder, command))
