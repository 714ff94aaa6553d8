"""`featcache audit` and `featcache neighbors`: the pieces on synthetic arrays and the tiny test
backbone, then the issue's acceptance checks on real ORL photos with the real efficientnet_lite0."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from audit_data import modified_orl, other_split_copy
from click.testing import CliRunner
from conftest import CLASS_COLOURS, TINY, make_image, make_tree
from PIL import Image

from featcache.audit import AuditOptions, ImageRef, audit, search, unit_rows
from featcache.audit import knn as knn_module
from featcache.audit.duplicates import group_duplicates
from featcache.audit.label_errors import label_scores, out_of_fold_probabilities
from featcache.audit.outliers import rank_outliers, robust_z
from featcache.cli import cli
from featcache.cli.audit_cmd import audit_cmd
from featcache.cli.neighbors_cmd import neighbors_cmd
from featcache.errors import FeatcacheError, ParameterError
from featcache.extraction import ExtractOptions, extract
from featcache.stores import open_store


def invoke(command, *args):
    return CliRunner().invoke(command, [str(a) for a in args])


# -- exact k-NN ------------------------------------------------------------------------------------
def brute_force(rows, queries, k, self_search):
    S = queries @ rows.T
    if self_search:
        np.fill_diagonal(S, -np.inf)
    order = np.lexsort((np.broadcast_to(np.arange(len(rows)), S.shape), -S), axis=1)[:, :k]
    return order, np.take_along_axis(S, order, axis=1)


@pytest.mark.parametrize("self_search", [True, False])
def test_chunked_search_equals_brute_force(monkeypatch, self_search):
    rng = np.random.default_rng(0)
    rows = unit_rows(rng.normal(size=(203, 12)))
    queries = None if self_search else unit_rows(rng.normal(size=(37, 12)))
    monkeypatch.setattr(knn_module, "CHUNK_ROWS", 16)  # many row chunks and query blocks, unequal last ones
    got = search(rows, queries, 7, tile_bytes=16 * 4 * 5)
    want_i, want_s = brute_force(rows, rows if self_search else queries, 7, self_search)
    np.testing.assert_array_equal(got.indices, want_i)
    np.testing.assert_allclose(got.similarities, want_s, rtol=1e-5)
    if self_search:
        assert not (got.indices == np.arange(len(rows))[:, None]).any()


def test_search_edges():
    rows = unit_rows(np.array([[1.0, 0], [1.0, 0], [0, 0], [0, 2.0]]))
    assert np.allclose(rows[2], 0) and np.allclose(rows[3], [0, 1])  # a zero row stays zero, others norm 1
    found = search(rows, None, 10)  # k larger than the other rows: capped
    assert found.k == 3
    assert found.indices[0].tolist() == [1, 2, 3] and found.similarities[0, 0] == pytest.approx(1)  # ties: row order
    with pytest.raises(ParameterError, match="k"):
        search(rows, None, 0)


# -- label errors ----------------------------------------------------------------------------------
def test_label_scores_rank_flagged_images_and_suggest_another_class():
    proba = np.array([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.05, 0.9, 0.05], [0.4, 0.35, 0.25]])
    labels = np.array([0, 2, 1, 0, 0])
    scores, suggested, flagged = label_scores(proba, labels, "self_confidence")
    assert flagged.tolist() == [3, 1, 2]  # the model disagrees on these; p(given) 0.05 < 0.3 = 0.3 (row order)
    assert suggested.tolist() == [1, 1, 0, 1, 1]  # never the given class
    assert scores[3] == pytest.approx(0.05)
    margin, _, flagged = label_scores(proba, labels, "margin")
    assert margin[1] == pytest.approx(0.3 - 0.5) and margin[4] == pytest.approx(0.05)
    assert flagged.tolist() == [3, 2, 1]  # margins -0.85, -0.3, -0.2


def test_out_of_fold_probabilities_find_flipped_labels():
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 4, (4, 16))
    y = np.repeat(np.arange(4), 15)
    X = centres[y] + rng.normal(size=(len(y), 16))
    noisy = y.copy()
    flipped = np.array([3, 20, 41, 58])
    noisy[flipped] = (y[flipped] + 1) % 4
    views = np.stack([X, X + rng.normal(0, 0.1, X.shape)], axis=1).astype(np.float32)  # (n, V=2, D)
    proba = out_of_fold_probabilities(views, noisy, 4, folds=5, seed=0)
    assert np.allclose(proba.sum(axis=1), 1)
    _, suggested, flagged = label_scores(proba, noisy)
    assert set(flagged[:4].tolist()) == set(flipped.tolist())
    assert (suggested[flipped] == y[flipped]).all()
    np.testing.assert_array_equal(proba, out_of_fold_probabilities(views, noisy, 4, folds=5, seed=0))  # seeded


def test_out_of_fold_probabilities_tolerate_tiny_classes():
    rng = np.random.default_rng(2)
    y = np.array([0] * 6 + [1] * 6 + [2])  # class 2 has one image: folds without it still fit
    X = (rng.normal(size=(13, 1, 8)) + y[:, None, None] * 3).astype(np.float32)
    proba = out_of_fold_probabilities(X, y, 3, folds=10)  # more folds than images of any class: capped
    assert proba[12, 2] == 0  # never trained on its own class, so it is flagged
    with pytest.raises(FeatcacheError, match="two classes"):
        out_of_fold_probabilities(X[:6], y[:6], 3)


# -- outliers and duplicates -----------------------------------------------------------------------
def test_robust_z_flags_only_the_far_images():
    scores = np.r_[np.linspace(0.1, 0.2, 50), 0.9, 0.6]
    flagged, z = rank_outliers(scores, 3.5)
    assert flagged.tolist() == [50, 51]
    assert np.all(np.isfinite(robust_z(np.zeros(5))))  # no spread at all: no division by zero


def ref(i, label, split):
    return ImageRef(i, f"{label}/{i}.png", label, split)


def test_duplicate_groups_join_exact_and_near_pairs_and_rank_problems_first():
    refs = [ref(0, "a", "train"), ref(1, "a", "train"), ref(2, "b", "train"), ref(3, "a", "test"),
            ref(4, "a", "train"), ref(5, "a", "train")]
    digests = ["d0", "d0", "d2", "d3", "d4", "d5"]
    groups = group_duplicates(refs, digests, {(1, 2): (0.97, 0.4), (4, 5): (0.99, 0.2)})
    # 0 = 1 exactly, 1 ~ 2 near: one near group with a label conflict; 4 ~ 5 harmless; 3 alone
    assert [[im.index for im in g.images] for g in groups] == [[0, 1, 2], [4, 5]]
    first, second = groups
    assert (first.kind, first.label_conflict, first.leak, first.similarity, first.pixel_difference) == \
        ("near", True, False, 0.97, 0.4)
    assert (second.kind, second.problem) == ("near", False)
    exact = group_duplicates(refs[:4], ["x", "y", "z", "x"], {})
    assert [(g.kind, g.leak, [im.index for im in g.images]) for g in exact] == [("exact", True, [0, 3])]


def test_audit_options_are_validated_and_the_cli_names_the_flag(tmp_path):
    for bad in ({"folds": 1}, {"C": 0}, {"score": "entropy"}, {"map": "umap"}, {"duplicate_similarity": 2},
                {"k": 0}, {"pixel_tolerance": -1}):
        with pytest.raises(ParameterError, match=next(iter(bad))):
            AuditOptions(**bad)
    result = invoke(audit_cmd, tmp_path / "none.zarr", "-b", TINY, "--C", "-1")
    assert isinstance(result.exception, FeatcacheError) and str(result.exception).startswith("--C: must be positive")
    result = invoke(audit_cmd, tmp_path / "none.zarr", "-b", TINY, "--outlier-z", "0")
    assert str(result.exception).startswith("--outlier-z:")


def test_map_methods_give_seeded_coordinates():
    from featcache.audit.embedding_map import embed_2d

    unit = unit_rows(np.random.default_rng(3).normal(size=(40, 8)))
    for method in ("pca", "tsne"):
        xy = embed_2d(unit, method, seed=0)
        assert xy.shape == (40, 2) and np.isfinite(xy).all()
        np.testing.assert_allclose(xy, embed_2d(unit, method, seed=0))


# -- the whole audit on the tiny backbone ----------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_audit(tmp_path_factory):
    """3 colour classes x 8 noisy images, plus: a red image filed as blue, an exact copy of a green
    image filed as red, a smooth blue image and its JPEG copy in another split; extracted once with
    the tiny backbone."""
    root = tmp_path_factory.mktemp("tiny_audit")
    data = make_tree(root / "data")
    shutil.move(data / "red" / "red_001.jpg", data / "blue" / "from_red.jpg")
    shutil.copy(data / "green" / "green_003.png", data / "red" / "copy_of_green.png")
    ramp = np.linspace(0.5, 1.0, 40)[None, :, None] * np.array(CLASS_COLOURS["blue"])  # smooth: JPEG keeps it
    Image.fromarray(np.repeat(ramp, 36, axis=0).astype(np.uint8)).save(data / "blue" / "smooth.png")
    other_split_copy(data / "blue" / "smooth.png", data / "blue" / "smooth_copy.jpg")
    store = root / "tiny.zarr"
    extract(data, store, ExtractOptions(backbones=[TINY], weights="random", progress=False))
    return data, store


def test_audit_cli_writes_every_finding_and_prints_json(tiny_audit, tmp_path):
    data, store = tiny_audit
    out = tmp_path / "report"
    result = invoke(audit_cmd, store, "-b", TINY, "--out", out, "--json", "-q", "--folds", "4")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_images"] == 27 and report["options"]["folds"] == 4
    first_two = {x["path"]: x["suggested"] for x in report["label_issues"][:2]}
    assert first_two == {"blue/from_red.jpg": "red", "red/copy_of_green.png": "green"}
    groups = {tuple(im["path"] for im in g["images"]): g for g in report["duplicates"]}
    exact = groups[("green/green_003.png", "red/copy_of_green.png")]
    assert (exact["kind"], exact["label_conflict"], exact["leak"]) == ("exact", True, False)
    near = groups[("blue/smooth.png", "blue/smooth_copy.jpg")]
    assert (near["kind"], near["leak"], near["label_conflict"]) == ("near", True, False)
    assert near["pixel_difference"] < 2.5
    assert len(groups) == 2 and report["unverified_pairs"] == 0
    assert [o["score"] for o in report["outliers"]] == sorted((o["score"] for o in report["outliers"]), reverse=True)
    for name in ("label_issues.png", "duplicates.png", "map.png", "flagged.csv", "audit.json"):
        assert (out / name).stat().st_size > 0, name
    with Image.open(out / "map.png") as im:
        assert im.size == (1000, 800)
    rows = list(csv.DictReader((out / "flagged.csv").open()))
    assert len(rows) == len(report["label_issues"]) + 4 + len(report["outliers"])
    assert {r["finding"] for r in rows} >= {"label_issue", "exact_duplicate", "near_duplicate"}
    assert json.loads((out / "audit.json").read_text())["files"]["map"] == str(out / "map.png")


def test_audit_table_and_images_that_moved(tiny_audit, tmp_path):
    data, store = tiny_audit
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    result = invoke(audit_cmd, store, "-b", TINY, "-q", "--data", tmp_path / "nowhere")
    assert result.exit_code == 0, result.output
    assert "duplicate groups: 1 (0 across splits, 1 with different labels)" in result.output  # the exact copy only
    assert "candidate pairs could not be checked" in result.output
    assert "blue/from_red.jpg" in result.output
    found = audit(store, TINY, AuditOptions(image_root=str(moved)))
    assert found.unverified_pairs == 0 and len(found.duplicates) == 2


def test_audit_refuses_stores_without_enough_images(tmp_path):
    data = tmp_path / "data"
    make_image(data / "a" / "1.png", (200, 0, 0), 0)
    make_image(data / "b" / "1.png", (0, 0, 200), 1)
    extract(data, tmp_path / "s.zarr", ExtractOptions(backbones=[TINY], weights="random", progress=False))
    with pytest.raises(FeatcacheError, match="at least 3"):
        audit(tmp_path / "s.zarr", TINY)


def test_neighbors_cli_finds_the_image_itself_first(tiny_audit, tmp_path):
    data, store = tiny_audit
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    result = invoke(neighbors_cmd, store, data / "green" / "green_001.jpg", tmp_path / "broken.jpg", "-b", TINY,
                    "-k", "3", "--json", "-q")
    assert result.exit_code == 1  # one file unreadable, the other still searched
    report = json.loads(result.stdout)
    good, bad = report["queries"]
    assert bad["error"] and not bad["neighbors"]
    assert [n["path"] for n in good["neighbors"]][0] == "green/green_001.jpg"
    assert good["neighbors"][0]["similarity"] == pytest.approx(1, abs=1e-3)
    assert len(good["neighbors"]) == 3 and report["rows"] == 27
    text = invoke(neighbors_cmd, store, data / "red", "-b", TINY, "-q")
    assert text.exit_code == 0 and text.output.count("rank") == 8  # one table per image of the folder
    assert str(invoke(neighbors_cmd, store, data / "red", "-b", TINY, "-k", "0").exception).startswith("-k:")


# -- real photos, real backbone: the issue's acceptance checks ----------------------------------------
# The 92x112 photos at 128 px: every check below as at 160 or 224 (measured: 20/20 moved photos found,
# the true person for all 20, the 2 odd images on top, top-5 neighbours 0.915 against 0.93 at 160)
ORL_SIZE = 128


@pytest.fixture(scope="module")
def orl_audit(orl_dir, imagenet_samples_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("orl_audit")
    truth = modified_orl(root / "data", orl_dir, imagenet_samples_dir)
    store = root / "orl.zarr"
    extract(root / "data", store, ExtractOptions(backbones=["efficientnet_lite0"], image_size=ORL_SIZE, progress=False))
    result = audit(store, "efficientnet_lite0", out=root / "report")
    return root, store, truth, result


@pytest.mark.slow
def test_orl_moved_photos_lead_the_label_errors(orl_audit):
    _, _, truth, result = orl_audit
    top = {x.image.path: x for x in result.label_issues[:40]}
    found = [p for p in truth["moved"] if p in top]
    right = [p for p in found if top[p].suggested == truth["moved"][p]]
    print(f"moved photos in the top 40: {len(found)}/20, true person suggested for {len(right)}")
    assert len(found) >= 16
    assert len(right) >= 0.8 * len(found)


@pytest.mark.slow
def test_orl_reencoded_copies_are_the_only_duplicates(orl_audit):
    _, _, truth, result = orl_audit
    groups = {frozenset(im.path for im in g.images): g for g in result.duplicates}
    assert set(groups) == {frozenset(pair) for pair in truth["copies"].items()}
    for copy, original in truth["copies"].items():
        g = groups[frozenset((copy, original))]
        same_person = copy.split("/")[0] == original.split("/")[0]
        assert g.kind == "near" and g.label_conflict != same_person
        assert g.leak or not same_person  # the same-folder copies were made to land in another split


@pytest.mark.slow
def test_orl_blank_and_off_topic_images_are_the_top_outliers(orl_audit):
    _, _, truth, result = orl_audit
    ranked = [o.image.path for o in result.outliers]
    print("outlier ranks:", {p: ranked.index(p) + 1 for p in truth["odd"]})
    assert set(ranked[:2]) == set(truth["odd"])


@pytest.mark.slow
def test_orl_report_files(orl_audit):
    root, _, _, result = orl_audit
    assert set(result.files) == {"label_issues_sheet", "duplicates_sheet", "outliers_sheet", "map", "csv", "json"}
    for path in result.files.values():
        assert Path(path).stat().st_size > 0


@pytest.mark.slow
def test_orl_neighbours_are_the_same_person(orl_audit):
    root, store, truth, result = orl_audit
    with open_store(store) as st:
        fs = st.load(["efficientnet_lite0"])
    extra = set(truth["copies"]) | set(truth["odd"])
    keep = [i for i, p in enumerate(fs.paths) if p not in extra]  # the 400 ORL photos
    person = np.array([truth["moved"].get(fs.paths[i], fs.paths[i].split("/")[0]) for i in keep])
    top5 = search(unit_rows(fs.features[keep, 0]), None, 5).indices
    rate = float(np.mean(person[top5] == person[:, None]))
    print(f"top-5 neighbours of the same person: {rate:.3f} over {len(keep)} ORL photos")
    assert len(keep) == 400 and rate >= 0.85
    queries = [root / "data" / p for p in ("s1/1.pgm", "s20/5.pgm", "s3/blank.png")]
    got = invoke(neighbors_cmd, store, *queries, "-b", "efficientnet_lite0", "-k", "5", "--json", "-q")
    assert got.exit_code == 0, got.output
    for q, path in zip(json.loads(got.stdout)["queries"], ("s1/1.pgm", "s20/5.pgm", "s3/blank.png"), strict=True):
        assert q["neighbors"][0]["path"] == path and q["neighbors"][0]["similarity"] > 0.999



def test_audit_reports_groups_that_straddle_splits(tiny_audit, tmp_path):
    """A store split per image, audited by patient-like groups (here: the last character of the file
    name): every group with images in two splits is reported, the largest first, and none other."""
    data, store = tiny_audit
    assert json.loads(invoke(audit_cmd, store, "--json", "-q").stdout)["group_leaks"] == []  # no groups: none
    pattern = r"(\w)\.\w+$"
    result = invoke(audit_cmd, store, "--group-by", pattern, "--json", "-q", "--out", tmp_path / "r")
    leaks = json.loads(result.stdout)["group_leaks"]
    with open_store(store) as st:
        m = st.manifest()
    splits: dict[str, set] = {}
    for path, split in zip(m.paths, m.splits.tolist(), strict=True):
        if (found := re.search(pattern, path)) is not None:
            splits.setdefault(found.group(1), set()).add(split)
    assert {g["group"] for g in leaks} == {g for g, s in splits.items() if len(s) > 1} != set()
    assert all(len(g["splits"]) > 1 and sum(g["splits"].values()) == len(g["images"]) for g in leaks)
    assert [len(g["images"]) for g in leaks] == sorted((len(g["images"]) for g in leaks), reverse=True)
    rows = [r for r in csv.DictReader((tmp_path / "r" / "flagged.csv").open()) if r["finding"] == "group_leak"]
    assert len(rows) == sum(len(g["images"]) for g in leaks)
    text = invoke(audit_cmd, store, "--group-by", pattern, "-q").output
    assert f"groups in several splits: {len(leaks)}" in text
    bad = CliRunner().invoke(cli, ["audit", str(store), "--group-by", "(", "-q"])
    assert bad.exit_code == 2 and "--group-by" in bad.output


def test_audit_out_is_replaced_whole_or_not_at_all(tiny_audit, tmp_path, monkeypatch):
    """A failed (or killed) audit over an earlier report leaves that report as it was and nothing
    beside it; a folder that is not an audit's is never replaced."""
    from featcache.audit import report

    data, store = tiny_audit
    out = tmp_path / "report"
    assert invoke(audit_cmd, store, "--out", out, "-q").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(report, "draw_map", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left")))
    failed = CliRunner().invoke(cli, ["audit", str(store), "--out", str(out), "-q"])
    assert failed.exit_code == 2 and "No space left" in failed.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no partial version left beside it
    monkeypatch.undo()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    refused = CliRunner().invoke(cli, ["audit", str(store), "--out", str(mine), "-q"])
    assert refused.exit_code == 2 and "--out" in refused.output and "audit.json" in refused.output
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
