# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Cheap checks of single files: does it exist, is the image intact."""
import os
import os.path as osp
from typing import Dict, Optional, Set

#: ``(format, first bytes, end marker, its description, file suffixes)``
#: of the image formats whose integrity is checked at construction.
IMAGE_FORMATS = (
    ('PNG', b'\x89PNG\r\n\x1a\n', b'IEND\xaeB`\x82', 'IEND chunk', ('.png', )),
    ('JPEG', b'\xff\xd8\xff', b'\xff\xd9', 'EOI marker FF D9', ('.jpg',
                                                                '.jpeg')),
)
# The end marker is searched in this many last bytes (tolerates padding).
TAIL_BYTES = 64


class ExistenceCache:
    """Checks many files with one directory listing per folder."""

    def __init__(self) -> None:
        self._listings: Dict[str, Optional[Set[str]]] = {}

    def exists(self, path: str) -> bool:
        folder, base = osp.split(path)
        if folder not in self._listings:
            try:
                self._listings[folder] = set(os.listdir(folder or '.'))
            except OSError:
                self._listings[folder] = None
        listing = self._listings[folder]
        if listing is not None and base in listing:
            return True
        # Rare cases a listing misses (case-insensitive file systems, ...).
        return osp.exists(path)


def image_file_problem(path: str) -> Optional[str]:
    """What is wrong with an image file, judged by its first and last bytes.

    Cheap (two small reads, no decoding), so it can run on every file of a
    dataset at construction. A PNG or JPEG file (recognised by its
    signature) must end with its end marker (the ``IEND`` chunk, the JPEG
    ``EOI`` marker) within its last :data:`TAIL_BYTES` bytes: an interrupted
    download or copy leaves it out. A file named ``.png`` / ``.jpg`` that
    starts with neither signature is reported; other formats are only
    checked for being empty. Damage inside a file that keeps both ends
    intact is found when the sample is loaded
    (:func:`~mmseg_u2pl.datasets.sample_checks.naming_sample_files`).

    Args:
        path (str): A local file.

    Returns:
        str | None: The problem (e.g. ``'is empty (0 bytes)'``), or None if
        the file looks intact.
    """
    try:
        with open(path, 'rb') as f:
            head = f.read(16)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - TAIL_BYTES, 0))
            tail = f.read()
    except OSError as error:
        return f'cannot be read ({error.strerror or error})'
    if size == 0:
        return 'is empty (0 bytes)'
    for name, start, end, marker, _ in IMAGE_FORMATS:
        if head.startswith(start):
            if end not in tail:
                return (f'is truncated: this {name} file of {size} bytes '
                        f'lacks its final {marker}')
            return None
    suffix = osp.splitext(path)[1].lower()
    for name, _, _, _, suffixes in IMAGE_FORMATS:
        if suffix in suffixes:
            return (f'is not a {name} image: it starts with {head[:8]!r} '
                    'instead of the PNG or JPEG signature')
    return None
