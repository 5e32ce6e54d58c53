"""What keeps a run from losing or clobbering a file: refusals before any request, no-follow opens,
and one run per output at a time.

Every check here runs before the first request is sent, so a refused run costs nothing. Working
files are opened with ``O_NOFOLLOW`` (and created with ``O_EXCL``), so a symbolic link planted at
one of their names is refused or replaced, never written through. The run lock is an
``fcntl.flock`` on ``<output>.lock``: the kernel drops it when its holder dies, so ``kill -9``
leaves no stale lock, and the file says who holds it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from coevol.errors import DataError, NoSpace, OutputError
from coevol.textsafe import inert_line

__all__ = [
    "NoSpace",
    "RunLock",
    "check_cache",
    "check_derived",
    "check_not_links",
    "check_not_running",
    "check_outputs",
    "file_error",
    "fsync_dir",
    "lock_path",
    "open_exclusive",
    "open_regular",
    "os_error",
    "regular_file",
]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def file_error(path: str | os.PathLike[str], message: str) -> DataError:
    """A problem with a whole input file: the message starts with the file's name."""
    return DataError(f"{os.fspath(path)}: {message}", source=os.fspath(path))


def os_error(path: Path, exc: OSError, doing: str = "write") -> OutputError:
    """An OS error at the file boundary as one line that says what to do."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(
            f"cannot {doing} {path}: no space left on device. The previous output is unchanged; "
            "free some space and rerun the same command to resume"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot {doing} {path}: permission denied ({exc.strerror})")
    if exc.errno == errno.ELOOP:
        return OutputError(f"refusing to {doing} {path}: it is a symbolic link (remove it)")
    return OutputError(f"cannot {doing} {path}: {exc.strerror or exc}")


def fsync_dir(path: Path) -> None:
    """Makes a rename durable; some platforms cannot open folders, which is fine to ignore."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def open_exclusive(path: Path) -> int:
    """Create ``path`` for writing, never through a link: whatever is at that name (a stale partial
    file or a planted symlink) is unlinked first, which removes a link and never touches its target."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            raise OutputError(f"refusing to write {path}: it is a folder")
        os.unlink(path)
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o644)
    except OSError as exc:
        raise os_error(path, exc) from None


def check_not_links(paths: Iterable[Path]) -> None:
    """Refuse working files (the store and its companions) that are symbolic links: SQLite would
    follow them, and such a file is the user's to remove, not ours to delete."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISLNK(os.lstat(path).st_mode):
                raise OutputError(
                    f"refusing to use {path}: it is a symbolic link, and coevol never writes through "
                    "links. Remove it (or point -o elsewhere)"
                )


def _same(a: Path, b: Path) -> bool:
    """The same file: equal resolved paths, or (both existing) one inode (hard links, bind mounts)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(input: Path | None, output: Path, others: dict[str, Path], pairs: Path | None) -> None:
    """Refuse, before anything is sent, a run that would overwrite its input, one of its own files,
    or a file of another running job.

    ``others`` names the run's working files beside the output (trace, rejects, store ...).
    """
    named = {"the output": output, **others}
    if input is not None:
        written = dict(named)
        for what, path in [*named.items(), *([("--pairs", pairs)] if pairs is not None else [])]:
            partial = path.with_name(path.name + ".partial")
            written[f"the partial file of {what.removeprefix('the ')}"] = partial
        for what, path in written.items():
            if _same(input, path):
                raise OutputError(f"refusing to run: {what} {path} is the input file {input}")
        if pairs is not None and _same(input, pairs):
            raise OutputError(f"refusing to run: --pairs {pairs} is the input file {input}")
    if pairs is not None:
        for what, path in named.items():
            if _same(pairs, path):
                raise OutputError(f"refusing to run: --pairs {pairs} is {what} {path}")
    check_not_running([*named.values(), *([pairs] if pairs is not None else [])])
    for path in (output, *([pairs] if pairs is not None else [])):
        _check_writable(path)


def check_cache(input: Path | None, cache: Path) -> None:
    """``--cache`` is a store several runs may share: never the input, in a folder coevol can write."""
    if input is not None and _same(input, cache):
        raise OutputError(f"refusing to run: --cache {cache} is the input file {input}")
    _check_writable(cache)


def check_derived(writes: dict[str, Path], reads: dict[str, Path]) -> None:
    """Refuse a command that reads one run's files and writes others (report): no written file may
    be one it reads, and none may belong to a running job."""
    for what, path in writes.items():
        for read_what, read in reads.items():
            if _same(path, read):
                raise OutputError(f"refusing to write {what} {path}: it is {read_what}")
    check_not_running(writes.values())
    for what, path in writes.items():
        folder = path.parent if str(path.parent) else Path(".")
        if path.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            why = "it is a folder" if path.is_dir() else f"the folder {folder} is missing or not writable"
            raise OutputError(f"cannot write {what} {path}: {why}")


_RUN_SUFFIXES = (
    ".partial",
    ".lock",
    ".trace.jsonl",
    ".rejects.jsonl",
    ".coevol.db",
    ".coevol.db-wal",
    ".coevol.db-shm",
    ".coevol.db-journal",
    ".dataset_info.json",
    ".commit.json",
)


def _owners(path: Path) -> list[Path]:
    """``path`` and the outputs whose working file it could be (``X.trace.jsonl.partial`` -> X)."""
    found = [path]
    name = path.name
    stripped = True
    while stripped:
        stripped = False
        for suffix in _RUN_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                found.append(path.with_name(name))
                stripped = True
    return found


def lock_path(path: Path) -> Path:
    """The run lock of the output (or ``--pairs`` file) ``path``."""
    return path.with_name(path.name + ".lock")


def check_not_running(paths: Iterable[Path]) -> None:
    """Refuse a file of another running coevol job: its output, its ``--pairs`` or one of its working
    files. A running job holds ``flock`` on ``<file>.lock``; probing never creates a lock file."""
    for path in paths:
        for owner, lock in _locks(path):
            holder = _held_by(lock)
            if holder is None:
                continue
            who = holder or "unknown process"
            if owner == path:
                raise OutputError(
                    f"another coevol run is already writing this output ({who}); "
                    f"wait for it to finish or stop it (lock: {lock})"
                )
            raise OutputError(
                f"refusing to run: {path} is a file of another running coevol job ({who}); "
                "wait for it to finish or choose another name"
            )


def _locks(path: Path) -> Iterator[tuple[Path, Path]]:
    """(owner, lock) for every run that ``path`` could belong to: an output's ``<X>.lock``, the
    lock of its default run folder ``<X>.coevol/lock``, and the lock of the run folder ``path``
    lies in (a folder holding coevol's ``run.json``)."""
    for owner in _owners(path):
        yield owner, lock_path(owner)
        yield owner, owner.with_name(owner.name + ".coevol") / "lock"
    folder = path.parent
    if (folder / "run.json").exists():
        yield folder, folder / "lock"


def _held_by(lock: Path) -> str | None:
    """The holder's description when ``lock`` is held by another process, else None."""
    try:
        fd = os.open(lock, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None  # no lock file (or a link, refused where it is used): nobody holds it
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return _read_holder(fd)
        return None  # free: closing the descriptor drops the probe's own lock at once
    finally:
        os.close(fd)


def regular_file(path: Path, what: str = "file") -> None:
    """Refuse to read anything but a regular file: a FIFO would hang the read, a link to
    ``/dev/zero`` would grow without end. Links to regular files are followed (the target counts)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}", source=os.fspath(path)) from None
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc.strerror or exc}", source=os.fspath(path)) from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{path}: the {what} is a folder, not a file", source=os.fspath(path))
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device or socket"
        raise DataError(
            f"{path}: the {what} is {kind}, not a regular file; coevol reads only regular files",
            source=os.fspath(path),
        )


def _check_writable(path: Path) -> None:
    if path.is_dir():
        raise OutputError(f"refusing to run: the output {path} is a folder; give a file name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"refusing to run: the output folder {folder} does not exist (create it first)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"refusing to run: the output folder {folder} is not writable")


class RunLock:
    """One run per output: an exclusive ``flock`` on ``<output>.lock`` held for the whole run.

    ``also`` names more files the run writes under their own names (``--pairs``): each gets its own
    ``<file>.lock``, so two runs sharing a ``--pairs``, or one naming the other's output, are refused.
    A second run is refused at once with the holder's description (pid and command). The lock dies
    with its process, so nothing is ever stale; the file itself stays (deleting it while others may
    open it would let two runs hold two different locks).
    """

    def __init__(self, path: Path, description: str, also: Iterable[Path] = ()) -> None:
        self.path = path
        self.description = description
        self.paths = [path, *(lock_path(p) for p in also)]
        self._fds: list[int] = []

    def acquire(self) -> None:
        try:
            for path in self.paths:
                self._fds.append(self._lock(path))
        except BaseException:
            self.release()
            raise

    def _lock(self, path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o644)
        except OSError as exc:
            raise os_error(path, exc, "lock") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise OutputError(
                    f"another coevol run is already writing this output ({holder or 'unknown process'}); "
                    f"wait for it to finish or stop it (lock: {path})"
                ) from None
            raise os_error(path, exc, "lock") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}: {self.description}\n".encode())
        except OSError:
            pass  # the lock holds without its description
        return fd

    def release(self) -> None:
        while self._fds:
            os.close(self._fds.pop())  # closing drops the flock

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        return inert_line(os.pread(fd, 1000, 0).decode("utf-8", "replace").strip())
    except OSError:
        return ""


def open_regular(path: Path) -> BinaryIO:
    """Open ``path`` to read only when it is a regular file (links followed).

    A FIFO would block the open and a device such as ``/dev/zero`` never ends, so both are refused
    before a byte is read: the open does not wait (``O_NONBLOCK``) and ``fstat`` checks the file
    that was opened, not the name. Raises ``IsADirectoryError`` for a folder and ``OSError``
    (errno ``EINVAL``, "not a regular file ...") for a FIFO, device or socket.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, a device or a socket)", str(path))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb", buffering=1 << 20)
    except BaseException:
        os.close(fd)
        raise
