"""The file system side of ingestion: which entries are indexed, which are skipped, and how files are read.

Policy (the README's "Security and limits" states it for users):

- Only regular files are read. FIFOs, sockets and character/block devices are never opened:
  a folder walk skips and reports them; naming one explicitly raises :class:`IngestError`.
- A folder walk does not follow symlinks, to files or to folders: each link is skipped and
  reported. A path named explicitly is followed (a link to a file or folder is what the user
  asked for), but a dangling link, a link loop or a link to a special file raises.
- Each file is read up to ``max_bytes`` (default :data:`DEFAULT_MAX_FILE_BYTES`): checked from
  the stat size, then enforced while reading (at most ``max_bytes + 1`` bytes), so a file that
  grows is caught too. Over the limit, a walked file is skipped and reported; a file named
  explicitly raises. A jsonl file is read whole under the same bound, which bounds its lines.
- Hidden entries (names starting with ".") in a walk are skipped and reported, not entered.

Files are opened with ``O_NONBLOCK | O_NOFOLLOW`` and checked again with ``fstat``: an entry
swapped for a FIFO or a link after the walk cannot hang the run or lead elsewhere.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "IngestError",
    "SkippedEntry",
    "SkippedFileError",
    "DEFAULT_MAX_FILE_BYTES",
    "HIDDEN",
    "SYMLINK",
    "SPECIAL_FILE",
    "TOO_LARGE",
    "UNSUPPORTED_SUFFIX",
    "FOLDER_LOOP",
    "check_max_bytes",
    "stat_named",
    "classify",
    "too_large",
    "walk_folder",
    "read_bounded",
]

DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024

# Skip reasons: stable strings, as they appear in ``index --json``.
HIDDEN = "hidden"
SYMLINK = "symlink"
SPECIAL_FILE = "special_file"
TOO_LARGE = "too_large"
UNSUPPORTED_SUFFIX = "unsupported_suffix"
FOLDER_LOOP = "folder_loop"

# (expected, fix) per reason, for the error raised when such a file is named explicitly.
_REFUSAL = {
    SYMLINK: ("a regular file", "name the link's target, or the link itself, on the command line"),
    SPECIAL_FILE: ("a regular file", "copy its content into a regular file"),
    TOO_LARGE: ("a file within the byte limit", "split the file, or raise the limit (--max-file-bytes / max_file_bytes=)"),
}
_READ_BLOCK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NOCTTY", 0)
_OPEN_FLAGS |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


class IngestError(ValueError):
    """A source path or file cannot be indexed as given."""


@dataclass(frozen=True)
class SkippedEntry:
    """An entry not indexed: its path, a reason (one of the constants above) and a readable detail."""

    path: Path
    reason: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"path": str(self.path), "reason": self.reason, "detail": self.detail}


class SkippedFileError(IngestError):
    """A file that cannot be read safely: skipped when a walk found it, an error when named explicitly."""

    def __init__(self, entry: SkippedEntry) -> None:
        self.entry = entry
        expected, fix = _REFUSAL.get(entry.reason, ("a regular file", "check the path"))
        super().__init__(f"{str(entry.path)!r} is {entry.detail}; expected {expected}. Fix: {fix}.")


def check_max_bytes(max_bytes: int) -> int:
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max file bytes is {max_bytes!r}; expected a positive int.")
    return max_bytes


def _kind_name(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def too_large(path: Path, size: int, max_bytes: int) -> SkippedEntry:
    return SkippedEntry(path, TOO_LARGE, f"{_size(size)}, over the limit of {_size(max_bytes)}")


def stat_named(raw: str | os.PathLike) -> os.stat_result:
    """``stat`` of a path named explicitly (links followed), or :class:`IngestError` saying what is wrong."""
    path = Path(raw).expanduser()
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise IngestError(
                f"{str(raw)!r} is a symlink to {os.readlink(path)!r}, which does not exist; expected a file or "
                "folder to index. Fix: repair or remove the link."
            ) from None
        raise IngestError(f"{str(raw)!r} does not exist; expected a file or folder to index. Fix: check the path.") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise IngestError(f"{str(raw)!r} is a symlink loop; expected a file or folder. Fix: repair the link.") from None
        raise IngestError(f"cannot read {str(raw)!r} ({exc.strerror or exc}). Fix: check its permissions.") from None


def classify(path: Path, st: os.stat_result, max_bytes: int) -> SkippedEntry | None:
    """Why a non-folder entry (its ``lstat``, or ``stat`` for a path named explicitly) is not read; None if it is."""
    if stat.S_ISLNK(st.st_mode):
        return SkippedEntry(path, SYMLINK, f"a symlink to {_link_target(path)!r} (not followed in folders)")
    if not stat.S_ISREG(st.st_mode):
        return SkippedEntry(path, SPECIAL_FILE, f"{_kind_name(st.st_mode)} (never opened)")
    if st.st_size > max_bytes:
        return too_large(path, st.st_size, max_bytes)
    return None


def walk_folder(root: Path, max_bytes: int, suffixes: tuple[str, ...]) -> tuple[list[Path], list[SkippedEntry]]:
    """Regular files under ``root`` with one of ``suffixes`` and within the byte limit (sorted),
    and every entry skipped (sorted). Entries are classified by ``lstat`` (links never followed);
    nothing here opens a file.
    """
    files: list[Path] = []
    skipped: list[SkippedEntry] = []
    seen_dirs: set[tuple[int, int]] = set()
    todo = [root]
    while todo:
        folder = todo.pop()
        try:
            st = os.stat(folder, follow_symlinks=False)
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise IngestError(f"cannot read folder {str(folder)!r} ({exc.strerror or exc}). Fix: check its permissions.") from None
        if (st.st_dev, st.st_ino) in seen_dirs:  # without links only a bind mount can loop
            skipped.append(SkippedEntry(folder, FOLDER_LOOP, "a folder already walked (a mount loop)"))
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        subdirs = []
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith("."):
                skipped.append(SkippedEntry(path, HIDDEN, "a hidden entry (name starts with '.')"))
                continue
            try:
                est = entry.stat(follow_symlinks=False)
            except OSError as exc:
                raise IngestError(f"cannot read {str(path)!r} ({exc.strerror or exc}). Fix: check its permissions.") from None
            if stat.S_ISDIR(est.st_mode):
                subdirs.append(path)
            elif stat.S_ISREG(est.st_mode) and path.suffix.lower() not in suffixes:
                skipped.append(SkippedEntry(path, UNSUPPORTED_SUFFIX, f"suffix {path.suffix!r}, not one of {', '.join(suffixes)}"))
            elif (problem := classify(path, est, max_bytes)) is not None:
                skipped.append(problem)
            else:
                files.append(path)
        todo.extend(reversed(subdirs))
    return sorted(files), sorted(skipped, key=lambda s: str(s.path))


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _swapped(path: Path) -> SkippedEntry | None:
    """What ``path`` became when it could not be opened as a regular file (None: it is one, or is gone)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return SkippedEntry(path, SYMLINK, f"a symlink to {_link_target(path)!r}")
    if not stat.S_ISREG(st.st_mode):
        return SkippedEntry(path, SPECIAL_FILE, f"{_kind_name(st.st_mode)} (never read)")
    return None


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path`` (not a link), at most ``max_bytes``.

    Raises :class:`SkippedFileError` for a link, a special file or a file over the limit (the
    entry may have changed since it was listed), :class:`IngestError` when it cannot be read.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        swapped = _swapped(path)  # O_NOFOLLOW met a link (ELOOP), or a socket (ENXIO) ...
        if swapped is not None:
            raise SkippedFileError(swapped) from None
        raise IngestError(f"cannot read {str(path)!r} ({exc.strerror or exc}). Fix: check that it is a readable file.") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SkippedFileError(SkippedEntry(path, SPECIAL_FILE, f"{_kind_name(st.st_mode)} (never read)"))
        if st.st_size > max_bytes:
            raise SkippedFileError(too_large(path, st.st_size, max_bytes))
        blocks, left = [], max_bytes + 1
        while left > 0:
            block = os.read(fd, min(left, _READ_BLOCK))
            if not block:
                break
            blocks.append(block)
            left -= len(block)
        if left <= 0:  # it grew past the limit after the stat
            detail = f"over the limit of {_size(max_bytes)} when read (it grew, or its stat size was wrong)"
            raise SkippedFileError(SkippedEntry(path, TOO_LARGE, detail))
        return b"".join(blocks)
    except OSError as exc:
        raise IngestError(f"cannot read {str(path)!r} ({exc.strerror or exc}). Fix: check that it is a readable file.") from None
    finally:
        os.close(fd)
