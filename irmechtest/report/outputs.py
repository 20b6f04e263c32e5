"""The run's output files (JSON verdicts, HTML report, baseline): checked at start-up, written atomically.

A CI job is cancelled with SIGINT, and ``-x`` stops a run half-way; either must leave an existing complete
output byte for byte as it was. So every output is written to a temporary file in its own folder and renamed
over the target (a rename within one file system is atomic), and an incomplete run writes its JSON and
report beside the target as ``<name>.partial<suffix>``, never over it (``plugin.py`` decides which).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path


class OutputPathError(ValueError):
    """An output path that cannot be written; the message names the option and the path."""


def partial_path(path: Path) -> Path:
    """Where an incomplete run's version of ``path`` goes: ``report.html`` -> ``report.partial.html``."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def check_output_paths(paths: Mapping[str, str | None]) -> None:
    """Refuse, before anything runs, output paths that could only fail at the end of the run.

    ``paths`` maps an option name to its value (None when not given). A path may name a file in a folder
    that does not exist yet (it is created when written), but not a directory, not a file below an
    existing file, not a folder this user cannot write to, and not the same file as another output.
    """
    seen: dict[Path, str] = {}
    for option, value in paths.items():
        if not value:
            continue
        path = Path(value).expanduser().resolve()
        if path.is_dir():
            raise OutputPathError(f"{option}={value}: is a directory; give a file name, e.g. {Path(value) / 'x'}")
        ancestor = path.parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise OutputPathError(f"{option}={value}: {ancestor} is a file, not a folder")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise OutputPathError(f"{option}={value}: the folder {ancestor} is not writable")
        if path.exists() and not os.access(path, os.W_OK):
            raise OutputPathError(f"{option}={value}: the file exists and is not writable")
        if path in seen:
            raise OutputPathError(f"{option}={value}: the same file as {seen[path]}")
        seen[path] = f"{option}={value}"


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and a rename: readers see the old file or the
    new one, never a half-written one, and an interruption leaves the old file untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    """The process's umask (mkstemp creates files 0600; outputs get the permissions a plain open would give)."""
    current = os.umask(0)
    os.umask(current)
    return current
