"""Where downloaded data sets live locally, and the error for ones that are not there."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from models.errors import DataError

__all__ = ["DATA_ROOT_ENV", "missing_files_error", "resolve_data_root"]

DATA_ROOT_ENV = "INFERPRUNE_DATA_ROOT"
_DEFAULT_ROOT = "~/.cache/inferprune/data"


def resolve_data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder that holds local copies of the public data sets.

    Args:
        root: an explicit folder; when ``None``, the ``INFERPRUNE_DATA_ROOT``
            environment variable, else ``~/.cache/inferprune/data``.

    Returns:
        The folder, with ``~`` expanded (it need not exist).
    """
    if root is None:
        root = os.environ.get(DATA_ROOT_ENV) or _DEFAULT_ROOT
    return Path(root).expanduser()


def missing_files_error(
    dataset: str,
    root: Path,
    layouts: Sequence[tuple[str, Sequence[Path]]],
    source: str,
    present: Callable[[Path], bool] = Path.is_file,
) -> DataError:
    """Return the error for a data set none of whose accepted layouts is complete.

    Args:
        dataset: the data set's name.
        root: the data root that was searched.
        layouts: ``(label, files)`` for every layout accepted, in order of preference.
        source: where to get the files from.
        present: whether a listed file counts as there (default: it is a file).
    """
    lines = [
        f"{dataset} was not found under {root} (inferprune never downloads data). "
        "It accepts any one of these layouts:"
    ]
    for label, files in layouts:
        missing = [path for path in files if not present(path)]
        lines.append(f"  {label}: missing {len(missing)} of {len(files)} files:")
        lines.extend(f"    {path}" for path in missing)
    lines.append(
        f"Get it from {source} and put it under {root}, or set data_root or "
        f"${DATA_ROOT_ENV} to the folder that holds it."
    )
    return DataError("\n".join(lines), fields=("data_root",))
