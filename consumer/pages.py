"""The state table's long-lived arrays in anonymous mappings of their own: memory they free goes back at once.

glibc's malloc serves a block above its mmap threshold with a mapping of its own, but the threshold is dynamic:
freeing a mapped block raises it to that block's size, up to 32 MiB. The state table doubles its arrays as keys
arrive, so after the first growth its arrays (a million keys' bookkeeping column is 8 MB) come from the heap,
and the holes each later growth leaves there are never given back: ~50 bytes per key at a million keys,
measured. Fixing the threshold low (``mallopt``) avoids that but sends every per-wave temporary through
``mmap`` as well: +40% CPU per record with 20,000-key waves, measured. So the table's own arrays, and only
they, are mapped here; temporaries keep malloc's fast heap.

Small pages only (``MADV_NOHUGEPAGE``): the table keeps ~45 arrays (one per column), each written from row 0 up
as keys arrive, so with 2 MiB transparent huge pages each array's last, partly used page is resident whole. That
rounding cost up to 2 MiB per array: measured with the bundled model, 254 MiB resident for 530,000 keys (168 MiB
of rows) and 333 MiB for 1,000,000 keys (321 MiB with 4 KiB pages). Advised explicitly, so a host whose THP
setting is ``always`` (or its khugepaged) does not round the arrays up either. The huge pages bought nothing
measurable: 2,000,000 records over 1,000,000 keys, the second million in random key order, ran at 412k/347k
rec/s with small pages against 347k/306k with huge pages (two pairs, loaded machine).
"""

from __future__ import annotations

import mmap

import numpy as np

__all__ = ["MAPPED_BYTES", "empty", "full", "grown"]

MAPPED_BYTES = 64 * 1024  # arrays from this size up get a mapping (smaller ones: malloc, as numpy does)
_NOHUGEPAGE: int | None = getattr(mmap, "MADV_NOHUGEPAGE", None)  # Linux only
_ANONYMOUS: int = getattr(mmap, "MAP_ANONYMOUS", 0x20)  # Python >= 3.10 names it; 0x20 on Linux


def empty(shape: tuple[int, ...], dtype: type | np.dtype) -> np.ndarray:
    """An uninitialised array, in its own anonymous mapping (unmapped when the array is freed) if large."""
    dt = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if nbytes < MAPPED_BYTES or dt.hasobject:
        return np.empty(shape, dtype=dt)
    mapping = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | _ANONYMOUS)  # private: plain anonymous memory, as
    # malloc's (the default, MAP_SHARED, is shared memory: no transparent huge pages, and shared with a fork)
    if _NOHUGEPAGE is not None:  # resident memory follows the rows written, 4 KiB at a time (module docstring)
        mapping.madvise(_NOHUGEPAGE)
    return np.frombuffer(mapping, dtype=dt).reshape(shape)


def full(shape: tuple[int, ...], value: object, dtype: type | np.dtype) -> np.ndarray:
    out = empty(shape, dtype)
    out[...] = value
    return out


def grown(arr: np.ndarray, rows: int, value: object = None) -> np.ndarray:
    """``arr`` with room for ``rows`` rows: its rows first, the new ones set to ``value`` (left as is if None).

    A new mapping is zeroed by the kernel: a zero ``value`` is not written there, so the new rows' pages stay
    untouched (not resident) until they are used.
    """
    out = empty((rows, *arr.shape[1:]), arr.dtype)
    out[:arr.shape[0]] = arr
    if value is not None and (out.base is None or bool(value)):
        out[arr.shape[0]:] = value
    return out
