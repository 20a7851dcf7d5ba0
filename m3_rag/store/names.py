"""Collection names: what a name may be, and where an Edge collection's folder may lie.

A name comes from outside (``--collection``, a config file) and becomes a folder on Edge, so it
is checked before any file is touched:

- every backend: Qdrant's own rule, 1 to 255 characters, none of ``< > : " / \\ | ? *`` and no
  control character;
- Qdrant Edge (a folder ``<path>/<name>``): a plain file name, letters, digits, ``_``, ``-`` and
  ``.`` (not first), and the resolved folder must lie directly inside the store path, so no
  ``..``, absolute path or symlink can lead elsewhere.

>>> check_collection_name("docs-2024.v1")
'docs-2024.v1'
>>> check_collection_name("../x")
Traceback (most recent call last):
...
ValueError: collection name '../x' has '/'; expected 1-255 characters without < > : " / \\ | ? * or control characters (Qdrant's rule). Fix: use a plain name such as 'm3' or 'my_docs'.
"""

from __future__ import annotations

import re
from pathlib import Path

from m3_rag.validation import short_repr, unicode_problem

__all__ = ["MAX_COLLECTION_NAME", "check_collection_name", "edge_collection_dir"]

MAX_COLLECTION_NAME = 255
_QDRANT_FORBIDDEN = set('<>:"/\\|?*')
_EDGE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def check_collection_name(name: object) -> str:
    """``name`` if Qdrant accepts it as a collection name; otherwise TypeError/ValueError."""
    if not isinstance(name, str):
        raise TypeError(
            f"collection must be a str, found {type(name).__name__} {short_repr(name)}. "
            "Fix: pass a name such as collection='m3' (the default)."
        )
    bad = sorted({c for c in name if c in _QDRANT_FORBIDDEN or ord(c) < 32 or ord(c) == 127})
    if bad:
        found = f"has {', '.join(repr(c) for c in bad)}"
    elif not 1 <= len(name) <= MAX_COLLECTION_NAME:
        found = f"is {len(name)} characters long"
    elif name.strip() != name:
        found = "starts or ends with whitespace"
    elif (problem := unicode_problem(name)) is not None:
        found = f"has {problem}"
    else:
        return name
    raise ValueError(
        f"collection name {short_repr(name)} {found}; expected 1-{MAX_COLLECTION_NAME} characters without "
        "< > : \" / \\ | ? * or control characters (Qdrant's rule). Fix: use a plain name such as 'm3' or 'my_docs'."
    )


def edge_collection_dir(root: Path, name: str) -> Path:
    """The folder of collection ``name`` under an Edge store path, confined to it."""
    check_collection_name(name)
    if not _EDGE_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"collection name {short_repr(name)} is not a plain folder name; expected letters, digits, '_', '-' "
            "and '.' (not first) on Qdrant Edge, where the name is a folder inside the store path. "
            "Fix: use a name such as 'm3' or 'my_docs'."
        )
    if root.exists() and not root.is_dir():
        raise ValueError(
            f"the store path {str(root)!r} is a file; expected a folder (it holds one folder per collection). "
            "Fix: pass a folder path, e.g. --path ./m3_index."
        )
    folder = root / name
    resolved_root = root.resolve()
    if folder.resolve().parent != resolved_root:
        raise ValueError(
            f"collection {name!r} resolves to {str(folder.resolve())!r}, outside the store path {str(resolved_root)!r} "
            "(a symlink?); expected a folder directly inside it. Fix: remove the link, or pass the real path as path=."
        )
    if folder.exists() and not folder.is_dir():
        raise ValueError(
            f"{str(folder)!r} is a file; expected the collection's folder. Fix: move the file, or use another collection name."
        )
    return folder
