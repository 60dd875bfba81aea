"""Files named in a flow's run form, as an operator types them."""

from __future__ import annotations

from pathlib import Path

from campflow.errors import CampflowError


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
