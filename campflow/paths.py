"""Which files a spec may name, and reading them safely when a run needs them.

A spec names files (e-mail bodies, attachments, Word templates, package documents). Without
a rule, `attachments: [../../etc/passwd]` would mail any file the server can read. The rule:
a path resolves (after `..` and symlinks) inside the folder of its spec file, or inside a
folder the administrator allows in `CAMPFLOW_ALLOWED_DIRS` (os.pathsep-separated).
`apply` stores the resolved absolute path; a run reads it only if it still resolves to itself
(no symlink swapped in since) and lies inside an allowed folder, and opens it without
following a final symlink.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from campflow.errors import CampflowError

ALLOWED_DIRS_ENV = "CAMPFLOW_ALLOWED_DIRS"
MAX_FILE_BYTES = 50 * 1024 * 1024  # a body, attachment or template larger than this is refused


class PathRefused(CampflowError):
    """A path a spec names lies outside the folders it may read, or is not a readable file."""


def allowed_dirs() -> tuple[Path, ...]:
    """The folders the administrator allows besides each spec's own folder."""
    value = os.environ.get(ALLOWED_DIRS_ENV, "")
    return tuple(Path(part).expanduser().resolve() for part in value.split(os.pathsep) if part.strip())


def _inside(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _where_allowed(base: Path) -> str:
    extra = "".join(f" or {root}" for root in allowed_dirs())
    return (f"outside the spec's folder {base}{extra}; move the file there, or have an administrator "
            f"allow its folder in {ALLOWED_DIRS_ENV}")


def spec_path(value: str, base: Path, also_in: Iterable[Path] = ()) -> Path:
    """The resolved file a spec at `base` names; PathRefused when outside or missing.

    Relative paths are relative to `base` (the spec file's folder); `also_in`: other folders
    allowed (a step copied from a template operation whose spec lies elsewhere).
    """
    written = Path(value).expanduser()
    path = (written if written.is_absolute() else base / written).resolve()
    roots = (base.resolve(), *(p.resolve() for p in also_in), *allowed_dirs())
    if not _inside(path, roots):
        shown = value if Path(value).expanduser() == path else f"{value} (that is {path})"
        raise PathRefused(f"{shown} lies {_where_allowed(base.resolve())}")
    if not path.is_file():
        raise PathRefused(f"{value} not found (no file {path}; paths are relative to {base})")
    return path


def read_stored(stored: str | Path, roots: Sequence[Path] | None = None) -> bytes:
    """The bytes of a path `apply` stored, checked again now; PathRefused when it changed.

    `roots`: the folders it must lie in (the spec's folder and CAMPFLOW_ALLOWED_DIRS);
    None checks only that the path still resolves to itself.
    """
    path = Path(stored)
    # apply stored the resolved path: a different resolution now means a symlink was put
    # somewhere along it (or the folder moved), so it may point anywhere
    if not path.is_absolute() or path.resolve() != path:
        raise PathRefused(f"{path} is no longer the file the spec named (it is now a symlink or "
                          "under one); restore the file, then apply the spec again")
    if roots is not None and not _inside(path, (*roots, *allowed_dirs())):
        raise PathRefused(f"{path} lies outside the spec's folder and {ALLOWED_DIRS_ENV}; "
                          "apply the spec again from the folder that holds it")
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise PathRefused(f"cannot read {path}: {exc.strerror}; put the file back or apply the spec again") from None
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise PathRefused(f"{path} is not a regular file; put the file back or apply the spec again")
        if info.st_size > MAX_FILE_BYTES:
            raise PathRefused(f"{path} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        return file.read(MAX_FILE_BYTES + 1)


# ---------------------------------------------------------------- files named in a flow's run form
# (as an operator types them: read from the working directory when relative)


def input_path(path: str, *, folder_ok: bool = False) -> Path:
    """`path` read from the working directory when relative; it must exist.

    Raises:
        CampflowError: nothing is there (or a folder where a file is expected).
    """
    found = Path.cwd() / Path(path).expanduser()  # an absolute path stays as it is
    if found.is_file() or (folder_ok and found.is_dir()):
        return found
    what = "file or folder" if folder_ok else "file"
    problem = "is a folder, not a file" if found.is_dir() else f"no such {what}"
    raise CampflowError(f"{found}: {problem}; check the path (a relative path is read from {Path.cwd()})")


def output_path(path: str | None) -> Path | None:
    """Where to write a file an operator asked for, read from the working directory when relative."""
    return None if path is None else Path.cwd() / Path(path).expanduser()
