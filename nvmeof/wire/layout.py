"""Declare every wire layout once.

A layout is a table of ``(field, struct code, spec offset)`` rows.  :class:`Layout`
turns it into one precompiled little-endian :class:`struct.Struct`, inserting pad bytes
for reserved gaps, and checks at import time that every field sits at the offset the
specification gives and that the whole structure has the specified size (the same
guarantee SPDK gets from the static asserts in ``nvmf_spec.h``).

Hot paths use ``layout.struct.unpack_from`` into plain tuples (field order = table order)
or the generated ``layout.record`` named tuple; control paths build zeroed buffers with
:meth:`Layout.pack` / :meth:`Layout.pack_into` from keyword arguments, so reserved bytes
are never spelled out as magic byte strings.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from collections.abc import Sequence
from typing import Any

FieldSpec = tuple[str, str, int]
Buffer = bytes | bytearray | memoryview


class Layout:
    """One wire structure: named fields at fixed offsets, total size asserted."""

    __slots__ = ("name", "size", "fields", "offsets", "struct", "record", "_defaults", "_index")

    def __init__(self, name: str, size: int, fields: Sequence[FieldSpec]) -> None:
        fmt = ["<"]
        pos = 0
        offsets: dict[str, int] = {}
        for field, code, offset in fields:
            if offset < pos:
                raise AssertionError(f"{name}.{field}: offset {offset} overlaps previous field (end {pos})")
            if offset > pos:
                fmt.append(f"{offset - pos}x")
            fmt.append(code)
            pos = offset + struct.calcsize("<" + code)
            offsets[field] = offset
        if pos > size:
            raise AssertionError(f"{name}: fields end at {pos}, beyond declared size {size}")
        if pos < size:
            fmt.append(f"{size - pos}x")
        compiled = struct.Struct("".join(fmt))
        if compiled.size != size:
            raise AssertionError(f"{name}: struct size {compiled.size} != declared {size}")
        self.name = name
        self.size = size
        self.fields = tuple(fields)
        self.offsets = offsets
        self.struct = compiled
        self.record: Any = namedtuple(name, [f for f, _, _ in fields])  # type: ignore[misc]
        self._defaults = tuple(b"" if code.endswith("s") else 0 for _, code, _ in fields)
        self._index = {f: i for i, (f, _, _) in enumerate(fields)}

    def unpack(self, buf: Buffer, offset: int = 0) -> Any:
        """Decode into the layout's named tuple."""
        return self.record._make(self.struct.unpack_from(buf, offset))

    def values(self, **values: Any) -> list[Any]:
        row = list(self._defaults)
        index = self._index
        for key, value in values.items():
            try:
                row[index[key]] = value
            except KeyError:
                raise TypeError(f"{self.name} has no field {key!r}") from None
        return row

    def pack(self, **values: Any) -> bytes:
        """Encode; fields not given are zero (reserved bytes are always zero)."""
        return self.struct.pack(*self.values(**values))

    def pack_into(self, buf: bytearray | memoryview, offset: int = 0, **values: Any) -> None:
        self.struct.pack_into(buf, offset, *self.values(**values))

    def extend(self, name: str, size: int, fields: Sequence[FieldSpec] = (),
               embed: tuple[Layout, int] | None = None) -> Layout:
        """A larger layout that starts with this one (e.g. a PDU header after the common
        header), with more fields, or another layout embedded at a given offset (an
        embedded field whose name is taken gets the inner layout's name as a prefix)."""
        rows = list(self.fields) + list(fields)
        if embed is not None:
            inner, at = embed
            taken = {f for f, _, _ in rows}
            rows += [(f if f not in taken else f"{inner.name.lower()}_{f}", code, at + off)
                     for f, code, off in inner.fields]
        return Layout(name, size, sorted(rows, key=lambda row: row[2]))

    def offset_of(self, field: str) -> int:
        return self.offsets[field]

    def __repr__(self) -> str:
        return f"Layout({self.name}, {self.size} bytes, {len(self.fields)} fields)"


def fixed_str(value: bytes | str, width: int, pad: bytes = b" ") -> bytes:
    """ASCII field of the given width, padded (NVMe uses spaces for SN/MN/FR and TRADDR)."""
    raw = value.encode("ascii") if isinstance(value, str) else value
    if len(raw) > width:
        raise ValueError(f"{raw!r} is longer than {width} bytes")
    return raw.ljust(width, pad)


def c_string(value: bytes) -> str:
    """Decode a NUL-terminated (then NUL or space padded) ASCII field."""
    return bytes(value).split(b"\0", 1)[0].decode("ascii", errors="replace").rstrip(" ")
