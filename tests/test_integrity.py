"""Every read can be verified: damage of any kind is refused on read with the damaged images named,
`featcache verify` finds it (exit 1), and the next extract recomputes exactly the damaged rows.

Real Zarr / HDF5 stores, damaged the way disks and people damage them (a deleted chunk file, bytes
overwritten inside a chunk, a status changed behind featcache's back), written by featcache's
extract() with a numpy stand-in backbone.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from conftest import make_tree
from store_harness import CHUNK, NUMPY_NET, fingerprint, run_extract

from featcache.cli import cli
from featcache.stores import DONE, FAILED, StoreDamagedError, open_store
from featcache.stores.store import SCHEMA_VERSION
from featcache.stores.verify import verify_store


@pytest.fixture
def data(tmp_path) -> Path:
    return make_tree(tmp_path / "data", per_class=2)  # 6 images: 3 chunks of CHUNK=2 rows


def only_key(store: Path) -> str:
    with open_store(store) as st:
        (key,) = st.keys()
    return key


def images_of_rows(store: Path, key: str, rows) -> list[str]:
    with open_store(store) as st:
        m, digests = st.manifest(), st[key].row_digests()
    held = {digests[r] for r in rows}
    return sorted(p for p, d in zip(m.paths, m.digests, strict=True) if d in held)


SECOND_CHUNK = range(CHUNK, 2 * CHUNK)


def verify_cli(store: Path, *extra: str):
    return CliRunner().invoke(cli, ["verify", str(store), *extra])


# -- ways of damaging a store: each returns the rows it damaged -----------------------------------

def delete_zarr_chunk(store: Path, key: str):
    (store / "features" / key / "features" / "c" / "1" / "0" / "0").unlink()  # reads back as zeros
    return SECOND_CHUNK


def flip_zarr_chunk_bytes(store: Path, key: str):
    chunk = store / "features" / key / "features" / "c" / "1" / "0" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    return SECOND_CHUNK  # its CRC-32C fails: the whole chunk is unreadable


def swap_zarr_chunks(store: Path, key: str):
    """Two intact chunk files in each other's place: every value valid, rows at the wrong images."""
    a, b = (store / "features" / key / "features" / "c" / str(i) / "0" / "0" for i in (1, 2))
    data_a = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data_a)
    return range(CHUNK, 3 * CHUNK)


def delete_zarr_checksum_chunk(store: Path, key: str):
    (store / "features" / key / "checksum" / "c" / "1").unlink()
    return SECOND_CHUNK


def overwrite_h5_chunk_bytes(store: Path, key: str):
    with h5py.File(store, "r") as f:
        info = f[f"features/{key}/features"].id.get_chunk_info(1)
    with open(store, "r+b") as f:  # a huge float16 where a feature of the chunk's first row was
        f.seek(info.byte_offset + 4)
        f.write(b"\xff\x7b")
    return [CHUNK]


def mark_failed_rows_done(store: Path, key: str):
    """A status changed behind featcache's back, through the storage library itself (so every
    format-level checksum is intact)."""
    if store.suffix == ".zarr":
        arr = zarr.open_array(str(store / "features" / key / "status"), mode="r+")
    else:
        arr = h5py.File(store, "r+")[f"features/{key}/status"]
    status = np.asarray(arr[2:4])
    arr[2:4] = np.where(status == DONE, FAILED, DONE).astype(np.int8)
    if store.suffix == ".h5":
        arr.file.close()
    return range(2, 4)


DAMAGE = {
    ".zarr": [delete_zarr_chunk, flip_zarr_chunk_bytes, swap_zarr_chunks, delete_zarr_checksum_chunk,
              mark_failed_rows_done],
    ".h5": [overwrite_h5_chunk_bytes, mark_failed_rows_done],
}


@pytest.mark.parametrize(("suffix", "damage"), [(s, d) for s, ds in DAMAGE.items() for d in ds],
                         ids=lambda v: getattr(v, "__name__", v))
def test_damage_is_refused_on_read_found_by_verify_and_recomputed_by_extract(data, tmp_path, suffix, damage):
    store = tmp_path / f"features{suffix}"
    run_extract(data, store)
    key, intact = only_key(store), fingerprint(store)
    rows = damage(store, key)
    damaged = images_of_rows(store, key, rows)

    with open_store(store) as st, pytest.raises(StoreDamagedError) as refused:
        st.load([NUMPY_NET])
    message = str(refused.value)
    assert sorted(refused.value.images) == damaged and all(p in message for p in damaged[:5])
    # the library names its own operation; the CLI words it as `featcache extract DATA --store STORE`
    assert f"extract(data_dir='{data}', store='{store}')" in message

    result = verify_cli(store)
    assert result.exit_code == 1, result.output
    assert all(p in result.output for p in damaged) and "featcache extract" in result.output

    rerun = run_extract(data, store).configs[0]
    assert (rerun.extracted, rerun.repaired) == (len(damaged), len(damaged))
    assert verify_cli(store).exit_code == 0
    assert fingerprint(store) == intact, "the recomputed rows are bit-identical"


@pytest.mark.parametrize("array", ["checksum", "features"])
def test_a_lost_array_is_damage_and_the_next_extract_recomputes_the_configuration(data, tmp_path, array):
    """Not mistaken for a store written before checksums: its checksums are not made up from the
    data as it is; every row is computed again."""
    store = tmp_path / "features.zarr"
    run_extract(data, store)
    key, intact = only_key(store), fingerprint(store)
    (store / "features" / key / array / "zarr.json").unlink()
    with open_store(store) as st, pytest.raises(StoreDamagedError) as refused:
        st.load([NUMPY_NET])
    assert len(refused.value.images) == 6
    result = verify_cli(store)
    assert result.exit_code == 1 and f"features/{key}/{array} cannot be read" in result.output
    assert run_extract(data, store).configs[0].extracted == 6
    assert fingerprint(store) == intact


def test_verify_json_lists_damage_per_configuration_and_says_how_to_repair(data, tmp_path):
    store = tmp_path / "features.zarr"
    run_extract(data, store)
    clean = json.loads(verify_cli(store, "--json").output)
    assert clean["clean"] and clean["configs"][0]["rows"] == 6 and clean["remedy"] == ""
    key = only_key(store)
    delete_zarr_chunk(store, key)
    result = verify_cli(store, "--json")
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert not report["clean"] and report["configs"][0]["damaged"] == images_of_rows(store, key, SECOND_CHUNK)
    assert f"featcache extract {data} --store {store}" in report["remedy"]
    missing = verify_cli(tmp_path / "nothing.zarr")
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_a_damaged_image_list_is_refused_and_rewritten_by_the_next_extract(data, tmp_path):
    store = tmp_path / "features.zarr"
    run_extract(data, store)
    intact = fingerprint(store)
    with open_store(store) as st:
        version = st.backend.get_attrs()["manifest"]
    labels = zarr.open_array(str(store / "manifests" / version / "label"), mode="r+")
    labels[0] = 1 - labels[0]  # one label changed: every format-level checksum intact
    with open_store(store) as st, pytest.raises(StoreDamagedError, match="image list .* damaged.*label"):
        st.manifest()
    assert verify_cli(store).exit_code == 1
    assert run_extract(data, store).configs[0].extracted == 0, "no feature is recomputed"
    assert fingerprint(store) == intact


def test_a_view_verifies_the_chunks_it_reads(data, tmp_path):
    store = tmp_path / "features.h5"
    run_extract(data, store)
    key = only_key(store)
    overwrite_h5_chunk_bytes(store, key)
    with open_store(store) as st:
        rows = st.rows([key])  # lazy: nothing read, nothing refused yet
        chunks = rows.groups  # positions of each chunk's images, in store order
        rows.take(chunks[0]).load()  # an intact chunk
        with pytest.raises(StoreDamagedError):
            rows.take(chunks[1]).load()


def downgrade_to_schema_1(store: Path) -> None:
    """The layout of schema 1: the manifest under images/ (its attributes at the root), no
    checksums, no versioned manifests."""
    root = zarr.open_group(str(store), mode="r+")
    version = root.attrs["manifest"]
    manifest = root[f"manifests/{version}"]
    images = root.create_group("images")
    for name in ("path", "digest", "label", "split"):
        src = manifest[name]
        images.create_array(name, data=np.asarray(src[:]), chunks=src.chunks)
    attrs = {k: v for k, v in manifest.attrs.items() if k != "checksums"}
    kept = {k: v for k, v in root.attrs.items() if k != "manifest"}
    root.attrs.put({**kept, **attrs, "featcache_schema": 1})
    del root["manifests"]
    for key in root["features"].group_keys():
        del root[f"features/{key}/checksum"]
        group = root[f"features/{key}"]
        group.attrs.put({k: v for k, v in group.attrs.items()
                         if k not in ("checksummed", "batch_size", "dim", "record_digest")})


def test_a_schema_1_store_is_read_as_not_verifiable_and_the_next_extract_adds_checksums(data, tmp_path):
    store = tmp_path / "features.zarr"
    run_extract(data, store)
    intact = fingerprint(store)
    downgrade_to_schema_1(store)
    with open_store(store) as st:
        assert len(st.load([NUMPY_NET]).paths) == 6  # read as it is
        assert not st.config_status(st.keys()[0]).verifiable
    report = verify_store(store)
    assert report.clean and not report.configs[0].verifiable and any("not verifiable" in n for n in report.notes)

    assert run_extract(data, store).configs[0].extracted == 0
    with open_store(store) as st:
        assert st.backend.get_attrs()["featcache_schema"] == SCHEMA_VERSION and st[st.keys()[0]].verifiable()
    assert verify_store(store).configs[0].verifiable
    after = fingerprint(store)
    for fp in (after, intact):  # schema 1 recorded neither the batch size nor the feature size
        for config in fp["configs"].values():
            config.pop("attrs")
    assert after == intact


# -- metadata outside the rows (issue 21, finding 2) -------------------------------------------------------------

def _edit_attrs(store: Path, node: str, edit) -> None:
    """Change attributes the way a hand or a script does: in the file, behind featcache's back."""
    if store.suffix == ".h5":
        with h5py.File(store, "r+") as f:
            attrs = {k: json.loads(v) for k, v in (f[node] if node else f).attrs.items()}
            edit(attrs)
            for k, v in attrs.items():
                (f[node] if node else f).attrs[k] = json.dumps(v)
        return
    meta = store / node / "zarr.json"
    doc = json.loads(meta.read_text())
    edit(doc["attributes"])
    meta.write_text(json.dumps(doc))


def _set(path: str, value):
    """An edit setting one (dotted) attribute."""
    def edit(attrs):
        *parents, last = path.split(".")
        for p in parents:
            attrs = attrs[p]
        attrs[last] = value(attrs[last]) if callable(value) else value
    edit.__name__ = path
    return edit


MANIFEST_EDITS = [_set("classes", lambda c: c[::-1]), _set("data_root", "/elsewhere"), _set("presplit", True),
                  _set("split", "50/25/25")]
CONFIG_EDITS = [_set("config.backbone.preprocess.scale", [1.0, 1.0, 1.0]), _set("config.backbone.input_size", 64),
                _set("config.augment.seed", 7), _set("chunk_rows", 4), _set("batch_size", 8), _set("dim", 9),
                _set("checksummed", False)]
EDITS = ([("manifest", e) for e in MANIFEST_EDITS] + [("root", _set("split", "50/25/25"))]
         + [("config", e) for e in CONFIG_EDITS])


@pytest.mark.parametrize(("where", "edit"), EDITS, ids=lambda v: getattr(v, "__name__", v))
def test_an_edited_record_is_refused_found_by_verify_and_restored_by_extract(data, tmp_path, where, edit):
    """Reversed class names, another data root or split, edited preprocessing numbers, input size,
    seed or chunk layout: every value still valid, every row checksum intact. Each is refused on
    read and reported by verify; the next extract rewrites the image list (nothing recomputed) or
    computes the configuration again (never reuses rows its record no longer describes)."""
    store = tmp_path / "features.zarr"
    run_extract(data, store)
    key, intact = only_key(store), fingerprint(store)
    with open_store(store) as st:
        node = {"manifest": f"manifests/{st.backend.get_attrs()['manifest']}", "root": "",
                "config": f"features/{key}"}[where]
    _edit_attrs(store, node, edit)

    with open_store(store) as st, pytest.raises(StoreDamagedError):
        st.load([key])
    result = verify_cli(store)
    assert result.exit_code == 1, result.output
    assert ("image list" if where != "config" else "record") in result.output

    rerun = run_extract(data, store).configs[0]
    assert rerun.extracted == (6 if where == "config" else 0)
    assert verify_cli(store).exit_code == 0
    assert fingerprint(store) == intact


@pytest.mark.parametrize(("where", "edit"), [EDITS[0], EDITS[-7]], ids=["classes", "scale"])
def test_an_edited_hdf5_record_is_refused_and_restored(data, tmp_path, where, edit):
    store = tmp_path / "features.h5"
    run_extract(data, store)
    key, intact = only_key(store), fingerprint(store)
    _edit_attrs(store, "manifests/1" if where == "manifest" else f"features/{key}", edit)
    with open_store(store) as st, pytest.raises(StoreDamagedError):
        st.load([key])
    assert verify_cli(store).exit_code == 1
    assert run_extract(data, store).configs[0].extracted == (6 if where == "config" else 0)
    assert fingerprint(store) == intact


def test_a_record_written_before_record_digests_is_read_and_bound_by_the_next_extract(data, tmp_path):
    store = tmp_path / "features.zarr"
    run_extract(data, store)
    key, intact = only_key(store), fingerprint(store)
    _edit_attrs(store, f"features/{key}", lambda a: a.pop("record_digest"))
    with open_store(store) as st:
        assert len(st.load([key]).paths) == 6
    assert run_extract(data, store).configs[0].extracted == 0
    with open_store(store) as st:
        assert "record_digest" in st[key].attrs()
    assert fingerprint(store) == intact


def test_info_lists_a_configuration_with_an_edited_record_as_damaged(data, tmp_path):
    """`info` still describes the store, and names the damaged configuration and its repair."""
    store = tmp_path / "features.zarr"
    run_extract(data, store)
    key = only_key(store)
    _edit_attrs(store, f"features/{key}", _set("config.backbone.input_size", 64))
    text = CliRunner().invoke(cli, ["info", str(store)])
    assert text.exit_code == 0, text.output
    assert "6 images" in text.output and f"  {key}: " in text.output and "featcache extract" in text.output
    as_json = CliRunner().invoke(cli, ["info", str(store), "--json"])
    info = json.loads(as_json.stdout)
    assert info["configs"] == [] and [d["key"] for d in info["damaged"]] == [key]
    assert "record" in info["damaged"][0]["problem"] and "featcache rm" in info["damaged"][0]["remedy"]


def _garbage_array_metadata(store: Path, key: str):
    (store / "features" / key / "features" / "zarr.json").write_text("garbage")


def _lost_digest_array(store: Path, key: str):
    import shutil

    shutil.rmtree(store / "features" / key / "digest")


@pytest.mark.parametrize("damage", [_garbage_array_metadata, _lost_digest_array], ids=["garbage-json", "lost-digest"])
def test_a_config_with_unreadable_array_metadata_is_one_clear_line_and_extract_recomputes_it(data, tmp_path, damage):
    """Not an internal error (exit 70): info lists the config as damaged, fit-head refuses it in
    one line (exit 2), verify reports it, and the next extract makes it again."""
    store = tmp_path / "features.zarr"
    run_extract(data, store)
    key, intact = only_key(store), fingerprint(store)
    damage(store, key)
    info = CliRunner().invoke(cli, ["info", str(store), "--json"])
    assert info.exit_code == 0, info.output
    assert [d["key"] for d in json.loads(info.stdout)["damaged"]] == [key]
    fit = CliRunner().invoke(cli, ["fit-head", str(store), "--head", "logreg", "--out", str(tmp_path / "run"), "-q"])
    assert fit.exit_code == 2 and "damaged" in fit.stderr and "featcache extract" in fit.stderr, fit.output
    assert verify_cli(store).exit_code == 1
    assert run_extract(data, store).configs[0].extracted == 6
    assert fingerprint(store) == intact


def test_a_store_whose_root_metadata_is_not_an_object_is_refused_in_one_line(data, tmp_path):
    store = tmp_path / "features.zarr"
    run_extract(data, store)
    (store / "zarr.json").write_text("[]")
    for args in (["info", str(store)], ["verify", str(store)], ["fit-head", str(store), "--out", str(tmp_path / "r")]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert "zarr.json is damaged" in result.stderr and "Traceback" not in result.output
