"""Crash-safe file writes: write to a temporary file in the same folder, fsync, rename.

A reader (or a resumed run) sees either the old file or the new one, never half of one. If the
write fails (full disk, killed process) the previous file stays intact and the temporary file
is removed.

:func:`result_set` does the same for a whole set of files (an analysis: summary, tables,
curves, plots): they are written into a hidden sibling folder which is then swapped with the
result folder in one ``renameat2(RENAME_EXCHANGE)`` call, so the folder holds the old complete
set or the new complete set, never a mix.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def _replacing(path: Path, prefix: str, suffix: str) -> Iterator[str]:
    """A temporary sibling of ``path`` to write; renamed over ``path`` if the block succeeds, else removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        mode = _final_mode(path)
        os.chmod(tmp, mode)
        yield tmp
        os.chmod(tmp, mode)  # a writer that recreated the file (safetensors) made it private again
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    _step(f"wrote {path.name}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success."""
    path = Path(path)
    with _replacing(path, f".{path.name}.", ".tmp") as tmp, open(tmp, mode) as f:
        yield f


#: Test hook: called with a label after every completed write and every step of a result-set
#: swap (the kill tests stop the writer here). None in normal use.
after_step: Callable[[str], None] | None = None


def _step(label: str) -> None:
    if after_step is not None:
        after_step(label)


def _final_mode(path: Path) -> int:
    """The permissions ``open(path, "w")`` would give: an existing file's, else 0o666 minus the umask.

    ``mkstemp`` creates private (0o600) files; results on a shared cluster must stay readable
    by whoever could read a plainly written file.
    """
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def atomic_write_with(path: str | os.PathLike, writer: Callable[[str], None]) -> None:
    """For writers that want a file name (savefig, safetensors): ``writer(tmp_path)`` then rename."""
    path = Path(path)
    with _replacing(path, f".{path.stem}.", path.suffix) as tmp:
        writer(tmp)


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


SET_MANIFEST = ".result_set.json"


@contextlib.contextmanager
def result_set(
    folder: str | os.PathLike, owned: Callable[[str], bool] = lambda name: False
) -> Iterator[Path]:
    """Write a whole set of results at once: yields an empty staging folder; on success it replaces the set.

    The caller writes every file of the new set into the yielded folder. Then the old set in
    ``folder`` (the entries its manifest lists, plus names for which ``owned(name)`` is true:
    scratch folders, sets written before manifests existed) is replaced by the new one in a
    single directory exchange. Anything else in ``folder`` (the lock file, the user's own files)
    stays. A kill at any moment leaves the old or the new complete set; a leftover staging
    folder is cleaned up by the next call. The caller must hold ``folder``'s lock.
    """
    folder = _real_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale_sets(folder, owned)
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{folder.name}.staging-", dir=folder.parent))
    except PermissionError as e:
        from vitdistill.errors import UserError

        raise UserError(
            f"{folder}: a new set of results is staged beside it, but {folder.parent} cannot be written "
            f"({e.strerror}); choose a folder whose parent you can write"
        ) from None
    try:
        os.chmod(stage, stat.S_IMODE(folder.stat().st_mode))  # mkdtemp's folders are private (0700)
        yield stage
        new = sorted(p.name for p in stage.iterdir())
        atomic_write_json(stage / SET_MANIFEST, {"entries": new, "staged_in": stage.name})
        keep = set(new) | _set_names(folder, owned)
        for p in folder.iterdir():  # files outside both sets come along (hard links: nothing moves)
            if p.name not in keep and p.is_file() and not p.is_symlink():
                link_or_copy(p, stage / p.name)
        _fsync_dir(stage)
        _step("carried")
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _swap(stage, folder)
    _step("swapped")
    clean_stale_sets(folder, owned)  # the staging path now holds the old set: restore the rest, remove it


def clean_stale_sets(folder: Path, owned: Callable[[str], bool] = lambda name: False) -> None:
    """Remove staging folders left by a killed :func:`result_set` (its caller holds the folder's lock).

    One that was swapped in already holds the old set: entries outside that set (the user's
    folders) go back into ``folder`` first.
    """
    folder = _real_folder(folder)
    current = _manifest(folder).get("staged_in")
    for sib in sorted(folder.parent.glob(f".{folder.name}.staging-*")):
        if sib.name == current or sib.name.endswith(
            ".old"
        ):  # the old set (.old: mid-way through _swap's fallback)
            old = _set_names(sib, owned)
            for p in sib.iterdir():
                if p.name not in old and p.name != SET_MANIFEST and not (folder / p.name).exists():
                    os.rename(p, folder / p.name)
                    _step(f"restored {p.name}")
        shutil.rmtree(sib)
        _fsync_dir(folder.parent)
        _step("removed old set")


def _real_folder(folder: str | os.PathLike) -> Path:
    """The real folder behind ``folder``: a link to a folder is the user's and is written through,
    never swapped away (the swap and its staging siblings work beside the link's target)."""
    return Path(os.path.realpath(Path(folder).expanduser()))


def _manifest(folder: Path) -> dict:
    try:
        m = json.loads((folder / SET_MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return m if isinstance(m, dict) else {}


def _set_names(folder: Path, owned: Callable[[str], bool]) -> set[str]:
    names = {str(n) for n in _manifest(folder).get("entries", [])} | {SET_MANIFEST}
    return names | {p.name for p in folder.iterdir() if owned(p.name)}


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """A hard link (no data moves) where the file system allows it, else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _swap(a: Path, b: Path) -> None:
    """Exchange two folders atomically (Linux renameat2); elsewhere two renames (a short window)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            _fsync_dir(b.parent)
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(b))
    tmp = a.with_name(a.name + ".old")
    os.rename(b, tmp)
    os.rename(a, b)
    os.rename(tmp, a)
    _fsync_dir(b.parent)


def _refuse_a_file_of_an_output(p: Path, flag: str, own: Callable[[Any], bool] | None = None) -> None:
    """A single-file output never replaces a file inside another command's output folder (an
    analysis's summary.json, an export's config.json): it would no longer be one set. ``own``
    recognises (from its JSON) a file this kind of output wrote before, which may be replaced."""
    from vitdistill.errors import UserError
    from vitdistill.utils.markers import describe_kind, kind_of

    found = kind_of(p.parent)
    if found is not None and own is not None:
        try:
            if own(json.loads(p.read_text())):
                return
        except (OSError, ValueError):
            pass
    if found is not None:
        raise UserError(
            f"{flag} {p} is a file of {describe_kind(found)} in {p.parent} and would be overwritten; "
            "choose another file"
        )


def check_output(
    path: str | os.PathLike | None, flag: str, kind: str = "folder", own: Callable[[Any], bool] | None = None
) -> None:
    """Fail at once, in one line, if ``path`` cannot be written as a ``kind`` ("folder" or "file").

    Run before any work starts: a path that is a file where a folder is wanted (or the reverse),
    one whose parent is a file, or one inside a folder that cannot be written to. ``own``: see
    :func:`_refuse_a_file_of_an_output`.
    """
    from vitdistill.errors import UserError

    if path is None:
        return
    p = Path(path).expanduser()
    try:  # a link loop or an over-long name cannot be used at all
        os.stat(p)
    except FileNotFoundError:
        if p.is_symlink():
            raise UserError(
                f"{flag} {p} is a link to {os.readlink(p)}, which does not exist: create it or choose another path"
            ) from None
    except OSError as e:
        raise UserError(f"{flag} {str(p)[:200]}: {e.strerror or e}") from None
    if kind == "folder" and p.exists() and not p.is_dir():
        raise UserError(f"{flag} {p} is a file, not a folder")
    if kind == "file" and p.is_dir():
        raise UserError(f"{flag} {p} is a folder, not a file")
    if kind == "file" and p.exists():
        _refuse_a_file_of_an_output(p, flag, own)
    anc = p if p.is_dir() else p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise UserError(f"{flag} {p}: {anc} is a file, so nothing can be written below it")
    try:  # a real probe: permission bits say nothing for root or on a read-only mount
        fd, probe = tempfile.mkstemp(prefix=".vitdistill-probe-", dir=anc)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"{flag} {p}: cannot write into {anc} ({e.strerror or e})") from None
