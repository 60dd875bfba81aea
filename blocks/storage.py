"""Output storage: where the files a step writes (merged letters, label sheets…) end up.

Steps write their files into their folder of the run (`$CAMPFLOW_OUTPUT_DIR/<operation>/<run>/<step>/`).
When a Prefect filesystem block named `campflow-output` is saved — a `LocalFileSystem` (a
shared drive) or a `RemoteFileSystem` (`s3://…`, `gcs://…`, `smb://…` through fsspec) —
the files are also published there under the same `<operation>/<run>/<step>/…` keys, and the
step reports those locations. The step's folder keeps its copy.

    from prefect.filesystems import RemoteFileSystem
    RemoteFileSystem(basepath="s3://marketing/campflow").save("campflow-output")

`CAMPFLOW_OUTPUT_STORAGE` names another block (`NAME` or `BLOCK-TYPE/NAME`), or `local` to
keep files in the run folder only. Blocks are looked up only inside a Prefect run, where the
API is live: a step run outside one (tests, scripts) keeps its files local unless the
variable names a block.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from prefect.filesystems import LocalFileSystem, RemoteFileSystem, WritableFileSystem

from blocks.lookup import default_blocks_available
from campflow.errors import CampflowError

STORAGE_VARIABLE = "CAMPFLOW_OUTPUT_STORAGE"
DEFAULT_BLOCK = "campflow-output"
LOCAL_ONLY = ("local", "none", "off")
FILESYSTEM_TYPES = ("local-file-system", "remote-file-system", "smb")


def output_storage() -> WritableFileSystem | None:
    """The filesystem block outputs are published to; None keeps them in the run folder."""
    wanted = os.environ.get(STORAGE_VARIABLE, "").strip()
    if wanted.lower() in LOCAL_ONLY:
        return None
    if not wanted and not default_blocks_available():
        return None  # no API to ask without starting a server just for this
    name = wanted or DEFAULT_BLOCK
    slugs = [name] if "/" in name else [f"{kind}/{name}" for kind in FILESYSTEM_TYPES]
    for slug in slugs:
        block = _load(slug)
        if block is not None:
            if not isinstance(block, WritableFileSystem):
                raise CampflowError(f"{STORAGE_VARIABLE}: block {slug} is a {type(block).__name__}, "
                                    "not a filesystem; name a LocalFileSystem or RemoteFileSystem block")
            return block
    if wanted:
        raise CampflowError(f"{STORAGE_VARIABLE}={wanted!r}: no filesystem block of that name is saved "
                            f"(looked for {', '.join(slugs)}); save one, or set it to 'local'")
    return None



def _load(slug: str) -> WritableFileSystem | None:
    from prefect.blocks.core import Block

    try:
        return Block.load(slug)  # type: ignore[return-value]
    except ValueError:  # "Unable to find block document named …" or an unknown block type
        return None


def publish(step_dir: Path, files: Sequence[Path]) -> tuple[Path | str, ...]:
    """Publish a step's files to the output storage block, if any; their final locations."""
    return publish_to(output_storage(), step_dir, files)


def publish_to(storage: WritableFileSystem | None, step_dir: Path,
               files: Sequence[Path]) -> tuple[Path | str, ...]:
    """Copy each file (inside `step_dir`, `…/<operation>/<run>/<step>`) to `storage` under
    `<operation>/<run>/<step>/<name>`.

    Without storage the files stay where they are and their paths are returned.
    """
    if storage is None:
        return tuple(files)
    prefix = PurePosixPath(*step_dir.parts[-3:])
    return tuple(_put(storage, file, str(prefix / file.relative_to(step_dir).as_posix())) for file in files)


def _put(storage: WritableFileSystem, file: Path, key: str) -> Path | str:
    if isinstance(storage, LocalFileSystem):
        return _copy_atomically(file, Path(storage.basepath or ".").expanduser() / key)
    if isinstance(storage, RemoteFileSystem):
        # fsspec streams the file; write_path would hold a whole merged document in memory
        target = f"{storage.basepath.rstrip('/')}/{key}"
        storage.filesystem.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        storage.filesystem.put_file(str(file), target)
        return target
    return str(storage.write_path(key, file.read_bytes()))


def _copy_atomically(file: Path, target: Path) -> Path:
    """Copy to a temporary name beside the target, then rename: readers never see half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        shutil.copyfile(file, partial)
        with partial.open("rb+") as written:
            os.fsync(written.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
