"""Read a GGUF file's metadata without loading its weights.

Listing models (``GET /v1/models``, routing-table discovery) must be instant and must not pull
hundreds of megabytes into memory, yet it wants the chat template (does it speak tools?) and the
trained context length. Those sit in the key/value section at the head of the file, so we parse just
that section. Values we do not ask for (notably the 150k-entry token list) are skipped, not decoded.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Collection
from pathlib import Path
from typing import Any

_MAGIC = b"GGUF"
# GGUF value types -> struct format of a scalar (strings and arrays are handled separately).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING = 8
_ARRAY = 9


class GGUFError(ValueError):
    """Not a GGUF file, or a truncated or corrupt one."""


class _Reader:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.buf):
            raise GGUFError("file ends inside the metadata section")
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self, *, keep: bool = True) -> str | None:
        n = self.take("Q")
        if self.pos + n > len(self.buf):
            raise GGUFError("file ends inside a metadata string")
        raw = self.buf[self.pos : self.pos + n] if keep else None
        self.pos += n
        return raw.decode("utf-8", errors="replace") if raw is not None else None

    def value(self, vtype: int, *, keep: bool) -> Any:
        if vtype in _SCALARS:
            return self.take(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string(keep=keep)
        if vtype == _ARRAY:
            item_type = self.take("I")
            count = self.take("Q")
            if not keep and item_type in _SCALARS:
                self.pos += count * struct.calcsize("<" + _SCALARS[item_type])
                return None
            items = [self.value(item_type, keep=keep) for _ in range(count)]
            return items if keep else None
        raise GGUFError(f"unknown metadata value type {vtype}")


def read_metadata(path: str | Path, keys: Collection[str] | None = None) -> dict[str, Any]:
    """The metadata key/values of the GGUF file at ``path`` (only ``keys`` when given).

    Raises :class:`GGUFError` for a file that is not GGUF or is cut short, and ``OSError`` when it
    cannot be read.
    """
    wanted = set(keys) if keys is not None else None
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        reader = _Reader(buf)
        if buf[:4] != _MAGIC:
            raise GGUFError(f"{path} is not a GGUF file")
        reader.pos = 4
        version = reader.take("I")
        if version == 1:
            raise GGUFError(f"{path} is GGUF version 1, which llama.cpp no longer loads")
        reader.take("Q")  # tensor count
        n_kv = reader.take("Q")
        out: dict[str, Any] = {}
        for _ in range(n_kv):
            key = reader.string() or ""
            vtype = reader.take("I")
            keep = wanted is None or key in wanted
            value = reader.value(vtype, keep=keep)
            if keep:
                out[key] = value
                if wanted is not None and wanted.issubset(out):
                    break
        return out
