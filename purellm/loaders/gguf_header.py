"""A fast GGUF header reader: scalar metadata and the tensor table, with each tensor's data as a
view into one memory map. gguf-py's GGUFReader builds a numpy object for every token and merge
string (~4 s for a 49k-token vocabulary); this walks past arrays it does not need.

Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (little-endian, version 2+).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import quant_shape_to_byte_shape

_SCALARS = {  # GGUF value type -> struct format
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9
_PLAIN = {
    GGMLQuantizationType.F32: np.float32,
    GGMLQuantizationType.F16: np.float16,
}


@dataclass(frozen=True)
class GGUFTensor:
    """The parts of gguf-py's ReaderTensor that purellm uses."""

    name: str
    tensor_type: GGMLQuantizationType
    shape: np.ndarray
    """GGUF order: the fastest-varying dimension first."""
    n_elements: int
    data: np.ndarray
    """float32/float16 values in HF order, or bytes shaped [..., bytes per row] for the rest."""


class GGUFHeader:
    def __init__(self, path: Path):
        self.blob = np.memmap(path, mode="r", dtype=np.uint8)
        self.buffer = memoryview(self.blob)
        if bytes(self.buffer[:4]) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        version, n_tensors, n_fields = struct.unpack_from("<IQQ", self.buffer, 4)
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is too old (2 or later needed)")
        self.pos = 24
        self.fields: dict[str, Any] = {}
        """Scalars and strings by key; arrays as their length."""
        for _ in range(n_fields):
            key = self._string()
            (kind,) = self._unpack("<I")
            self.fields[key] = self._value(kind)
        table = [self._tensor_info() for _ in range(n_tensors)]
        alignment = int(self.fields.get("general.alignment", 32))
        start = -(-self.pos // alignment) * alignment
        self.tensors = [self._tensor(start, *info) for info in table]

    def _unpack(self, fmt: str) -> tuple:
        values = struct.unpack_from(fmt, self.buffer, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def _string(self) -> str:
        (length,) = self._unpack("<Q")
        text = bytes(self.buffer[self.pos : self.pos + length]).decode("utf-8")
        self.pos += length
        return text

    def _value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self._unpack("<" + _SCALARS[kind])[0]
        if kind == _STRING:
            return self._string()
        if kind != _ARRAY:
            raise ValueError(f"unknown GGUF value type {kind}")
        element, count = self._unpack("<IQ")
        if element in _SCALARS:
            self.pos += count * struct.calcsize("<" + _SCALARS[element])
        else:
            for _ in range(count):
                self._value(element)
        return count

    def _tensor_info(self) -> tuple[str, list[int], int, int]:
        name = self._string()
        (n_dims,) = self._unpack("<I")
        dims = list(self._unpack(f"<{n_dims}Q"))
        kind, offset = self._unpack("<IQ")
        return name, dims, kind, offset

    def _tensor(self, start: int, name: str, dims: list[int], kind: int, offset: int):
        tensor_type = GGMLQuantizationType(kind)
        n_elements = int(np.prod(dims))
        block, type_size = GGML_QUANT_SIZES[tensor_type]
        n_bytes = n_elements * type_size // block
        raw = self.blob[start + offset : start + offset + n_bytes]
        if len(raw) < n_bytes:
            raise ValueError(
                f"tensor {name!r} is truncated: {len(raw)} of its {n_bytes} bytes are in the file"
            )
        shape = tuple(reversed(dims))
        if tensor_type in _PLAIN:
            data = raw.view(_PLAIN[tensor_type]).reshape(shape)
        else:
            data = raw.reshape(quant_shape_to_byte_shape(shape, tensor_type))
        return GGUFTensor(name, tensor_type, np.array(dims), n_elements, data)
