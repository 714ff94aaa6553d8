"""The click layer: help is instant and clean, user mistakes exit 2 with one clear line, --json parses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from featcache.cli import cli
from featcache.stores import open_store

COMMANDS = sorted(cli.commands)


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_every_command_has_help():
    assert {"extract", "info", "backbones", "classify", "export", "predict", "data"} <= set(COMMANDS)
    for name in COMMANDS:
        result = invoke(name, "--help")
        assert result.exit_code == 0, name
        assert "Usage: " in result.output and "Traceback" not in result.output


def test_help_does_not_import_tensorflow():
    code = ("import sys; from click.testing import CliRunner; from featcache.cli import cli;"
            "[CliRunner().invoke(cli, [c, '--help']) for c in list(cli.commands) + ['--help']];"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_backbones_json_lists_builtins_and_availability():
    rows = json.loads(invoke("backbones", "--json").output)
    by_name = {r["name"]: r for r in rows}
    assert by_name["efficientnet_lite0"]["weights_available"] is True
    assert by_name["efficientnet_lite0"]["input_size"] == 224 and by_name["efficientnet_lite0"]["feature_dim"] == 1280
    assert by_name["inception_v3"]["input_size"] == 299 and by_name["resnet50"]["feature_dim"] == 2048


@pytest.mark.parametrize("args, message", [
    (["extract", "/no/such/folder", "--store", "x.zarr", "-b", "tiny_test"], "does not exist"),
    (["extract", "{data}", "--store", "x.zarr", "-b", "no_such_net"], "unknown backbone"),
    (["extract", "{data}", "--store", "x.txt", "-b", "tiny_test", "--weights", "random"], "unknown store type"),
    (["extract", "{data}", "--store", "x.zarr", "-b", "tiny_test", "--weights", "/no/file.h5"], "does not exist"),
    (["extract", "{data}", "--store", "x.zarr", "-b", "tiny_test", "--split", "70/abc"], "invalid split"),
    (["info", "/no/such/store.zarr"], "does not exist"),
])
def test_user_mistakes_exit_2_with_a_clear_message(args, message, image_tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, [a.replace("{data}", str(image_tree)) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_extract_then_info_json(image_tree, tmp_path):
    store = tmp_path / "s.zarr"
    result = invoke("extract", str(image_tree), "--store", str(store), "-b", "tiny_test", "--weights", "random",
                    "--augment", "2", "--json", "-q")
    summary = json.loads(result.output)
    assert summary["images"] == 24 and summary["configs"][0]["extracted"] == 24
    run = summary["configs"][0]  # images/s counts images; the 3 views of each are views/s
    assert run["images_per_s"] == pytest.approx(24 / run["seconds"], rel=0.01)
    assert run["views_per_s"] == pytest.approx(3 * run["images_per_s"])
    again = json.loads(invoke("extract", str(image_tree), "--store", str(store), "-b", "tiny_test", "--weights",
                              "random", "--augment", "2", "--json", "-q").output)
    assert again["configs"][0]["extracted"] == 0 and again["configs"][0]["reused"] == 24

    info = json.loads(invoke("info", str(store), "--json").output)
    assert info["images"] == 24 and set(info["classes"]) == {"red", "green", "blue"}
    (cfg,) = info["configs"]
    assert cfg["views"] == 3 and cfg["dim"] == 16 and cfg["complete"] and cfg["done"] == 24
    assert cfg["stats"]["views_per_s"] == pytest.approx(3 * cfg["stats"]["images_per_s"], rel=0.01)
    text = invoke("info", str(store)).output
    assert "tiny_test-32-avg-v3" in text and "validation" in text


def test_extract_reports_skipped_files(image_tree, tmp_path):
    (image_tree / "red" / "broken.jpg").write_bytes(b"not really a jpeg")
    result = CliRunner().invoke(cli, ["extract", str(image_tree), "--store", str(tmp_path / "s.h5"), "-b",
                                      "tiny_test", "--weights", "random", "-q"])
    assert result.exit_code == 1  # finished, but a file could not be read (the README's promise)
    assert "skipped" in result.output and "broken.jpg" in result.output
    as_json = CliRunner().invoke(cli, ["extract", str(image_tree), "--store", str(tmp_path / "s.h5"), "-b",
                                       "tiny_test", "--weights", "random", "-q", "--json"])
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["skipped"][0]["path"] == "red/broken.jpg"
    strict = CliRunner().invoke(cli, ["extract", str(image_tree), "--store", str(tmp_path / "t.h5"), "-b",
                                      "tiny_test", "--weights", "random", "-q", "--strict"])
    assert strict.exit_code == 2 and "broken.jpg" in strict.output


def test_classify_real_photos_json(imagenet_samples_dir):
    photos = sorted(imagenet_samples_dir.glob("imagenet_0[0-3]_*.jpg"))
    result = invoke("classify", *map(str, photos), "--top", "5", "--json")
    records = json.loads(result.output)
    assert len(records) == 4
    hits = sum(int(p.stem.rsplit("_", 1)[1]) in [t["index"] for t in r["top"]] for p, r in zip(photos, records, strict=True))
    assert hits >= 3
    assert all(isinstance(r["top"][0]["name"], str) and r["top"][0]["probability"] > 0 for r in records)


def test_classify_compares_several_backbones_on_the_same_photos(imagenet_samples_dir):
    photos = sorted(imagenet_samples_dir.glob("imagenet_0[0-1]_*.jpg"))
    records = json.loads(invoke("classify", *map(str, photos), "-b", "efficientnet_lite0", "-b",
                                "efficientnet_lite1", "--top", "3", "--json").output)
    assert [(r["backbone"], Path(r["path"]).name) for r in records] == [
        (b, p.name) for b in ("efficientnet_lite0", "efficientnet_lite1") for p in photos]
    assert all(len(r["top"]) == 3 for r in records)


def test_extract_reports_files_scan_could_not_use_and_empty_classes(image_tree, tmp_path):
    import os

    os.mkfifo(image_tree / "red" / "pipe.jpg")  # opening it would block: skipped from its stat alone
    (image_tree / "purple").mkdir()
    result = CliRunner().invoke(cli, ["extract", str(image_tree), "--store", str(tmp_path / "s.zarr"), "-b",
                                      "tiny_test", "--weights", "random", "-q", "--json"])
    assert result.exit_code == 1, result.output
    out = json.loads(result.stdout)
    assert out["skipped"] == [{"path": "red/pipe.jpg", "reason": "not a regular file (a FIFO (named pipe))"}]
    assert out["empty_classes"] == ["purple"] and "purple" not in out["classes"]
    strict = CliRunner().invoke(cli, ["extract", str(image_tree), "--store", str(tmp_path / "t.zarr"), "-b",
                                      "tiny_test", "--weights", "random", "-q", "--strict"])
    assert strict.exit_code == 2 and "pipe.jpg" in strict.output and "strict mode" in strict.output


# One cheap failing input per command that has --json; a new command with --json must add its own here.
JSON_FAILURES = {
    "audit": ["{missing}", "-b", "tiny_test"],
    "auto": ["{missing}", "--out", "{tmp}/best"],
    "backbones": ["--blocks", "no_such_net"],
    "classify": ["{missing}", "-b", "no_such_net"],
    "compare": ["{missing}"],
    "data": ["no-such-set"],
    "export": ["{missing}", "--out", "{tmp}/m.keras"],
    "export-features": ["{missing}", "-b", "tiny_test", "--out", "{tmp}/f"],
    "extract": ["{missing}", "--store", "{tmp}/s.zarr", "-b", "tiny_test"],
    "fine-tune": ["{missing}", "--out", "{tmp}/r"],
    "fit-head": ["{missing}", "-b", "tiny_test", "--out", "{tmp}/r"],
    "heads": ["--no-such-option"],
    "info": ["{missing}"],
    "neighbors": ["{missing}", "{missing}", "-b", "tiny_test"],
    "predict": ["{missing}", "{missing}"],
    "rm": ["{missing}", "-b", "tiny_test-32-avg-v1-00000000"],
    "sweep": ["{missing}", "-b", "tiny_test"],
    "verify": ["{missing}"],
}


def _has_json(name: str) -> bool:
    import click

    command = cli.commands[name]
    return any("--json" in p.opts for p in command.get_params(click.Context(command)))


def test_every_json_failure_is_one_json_object_on_stdout_and_one_line_on_stderr(tmp_path):
    assert {c for c in COMMANDS if _has_json(c)} == set(JSON_FAILURES)
    for name, args in JSON_FAILURES.items():
        args = [a.format(missing=tmp_path / "no-such.zarr", tmp=tmp_path) for a in args]
        result = CliRunner().invoke(cli, [name, *args, "--json"])
        assert result.exit_code == 2, (name, result.output)
        error = json.loads(result.stdout)  # the whole of stdout: one object
        assert set(error) == {"error", "remedy", "exit_code"} and error["exit_code"] == 2, (name, error)
        assert error["error"] and "Traceback" not in result.output, name
        (line,) = result.stderr.splitlines()  # the human line stays on stderr
        assert line.startswith("error: ") and error["error"] in line, (name, line)


def test_usage_errors_are_featcache_lines_not_clicks():
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 2 and result.stderr.startswith("error: Missing argument") and "Usage:" not in result.stderr
    assert "featcache info --help" in result.stderr or "cli info --help" in result.stderr
    assert result.stdout == ""  # no --json: nothing on stdout


# Renamed flags: the old spelling is hidden from --help but still accepted for one release.
OLD_SPELLINGS = [
    ("extract", "--dask", ["{data}", "--store", "{tmp}/s.h5", "-b", "tiny_test", "--dask", "local:1"]),
    ("extract", "--plan-only", ["{missing}", "--store", "{tmp}/s.zarr", "-b", "tiny_test", "--plan-only"]),
    ("extract", "--shard", ["{missing}", "--store", "{tmp}/s.zarr", "-b", "tiny_test", "--shard", "0/2"]),
    ("sweep", "--dask", ["{missing}", "-b", "tiny_test", "--dask", "local:1"]),
    ("classify", "--top", ["{missing}", "-b", "no_such_net", "--top", "3"]),
    ("audit", "--top", ["{missing}", "-b", "tiny_test", "--top", "3"]),
    ("audit", "--C", ["{missing}", "-b", "tiny_test", "--C", "0.5"]),
    ("fit-head", "--C", ["{missing}", "-b", "tiny_test", "--head", "logreg", "--out", "{tmp}/r", "--C", "0.5"]),
    ("fit-head", "--temperature", ["{missing}", "-b", "tiny_test", "--head", "knn", "--out", "{tmp}/r",
                                   "--temperature", "0.5"]),
    ("sweep", "--views", ["{missing}", "-b", "tiny_test", "--head", "knn", "--views", "first"]),
]


@pytest.mark.parametrize("name, old, args", OLD_SPELLINGS, ids=lambda v: v if isinstance(v, str) else None)
def test_old_flag_spellings_are_hidden_and_still_accepted(name, old, args, image_tree, tmp_path):
    import re

    assert not re.search(rf"(?<![\w-]){old}(?![\w-])", invoke(name, "--help").output)
    args = [a.format(missing=tmp_path / "none.zarr", tmp=tmp_path, data=image_tree) for a in args]
    result = CliRunner().invoke(cli, [name, *args])
    assert result.exit_code == 2 and "No such option" not in result.output, result.output
    assert "does not exist" in result.output or "unknown backbone" in result.output or "single writer" in \
        result.output, result.output


def test_old_and_new_spelling_together_is_refused():
    result = CliRunner().invoke(cli, ["classify", "x.jpg", "--top", "3", "--top-k", "3"])
    assert result.exit_code == 2 and "--top and --top-k set the same thing" in result.stderr, result.output


def test_a_remedy_is_worded_as_the_command_that_does_it(tmp_path):
    result = CliRunner().invoke(cli, ["info", str(tmp_path / "none.zarr"), "--json"])
    error = json.loads(result.stdout)
    assert error["error"] == f"store {tmp_path / 'none.zarr'} does not exist"
    assert error["remedy"] == f"create it with featcache extract DATA_DIR --store {tmp_path / 'none.zarr'}"


def test_a_refused_system_call_exits_2_and_a_bug_exits_70_each_with_one_json_object(monkeypatch, tmp_path):
    import featcache.stores.info

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(featcache.stores.info, "store_info", denied)
    result = CliRunner().invoke(cli, ["info", str(tmp_path / "s.zarr"), "--json"])
    assert result.exit_code == 2 and json.loads(result.stdout)["error"].startswith("PermissionError: ")
    assert result.stderr.startswith("error: PermissionError") and "Traceback" not in result.stderr

    def bug(path):
        return {}["no such key"]

    monkeypatch.setattr(featcache.stores.info, "store_info", bug)
    result = CliRunner().invoke(cli, ["info", str(tmp_path / "s.zarr"), "--json"])
    error = json.loads(result.stdout)
    assert result.exit_code == error["exit_code"] == 70 and error["error"].startswith("internal error (KeyError")
    assert "Traceback" in result.stderr and result.stderr.splitlines()[-1].startswith("error: internal error")


def test_a_shared_option_has_one_spelling_and_one_help_text_everywhere():
    import click

    helps: dict[str, set[str]] = {}
    for name in COMMANDS:
        command = cli.commands[name]
        for p in command.get_params(click.Context(command)):
            if isinstance(p, click.Option) and not p.hidden:
                for opt in p.opts:
                    helps.setdefault(opt, set()).add(p.help or "")
    for opt in ("--json", "--quiet", "--memory-limit", "--workers"):
        assert len(helps[opt]) == 1, (opt, helps[opt])
    assert helps["-q"] == helps["--quiet"] and all(h.startswith("Seed of ") for h in helps["--seed"])
    assert all(h.startswith("Backbone (see `featcache backbones`); ") for h in helps["--backbone"])
    assert all(h.startswith("Images per ") for h in helps["--batch-size"] if "auto" not in h)
    # one name per concept: neighbours are -k/--k, classes shown are --top-k, output is -o/--out
    assert "--top" not in helps and "--dest" not in helps and "--C" not in helps and "-k" in helps
    assert {o for o in helps if o.lower() != o} == set(), "flags are lower case"


def test_ctrl_c_during_extract_says_what_was_saved_and_the_rerun_computes_the_rest(image_tree, tmp_path,
                                                                                     monkeypatch):
    """Rows are saved a unit at a time: the message counts the images saved, not the ones seen."""
    from featcache.stores import group

    monkeypatch.setattr(group, "choose_chunk_rows", lambda *a, **k: 8)  # 24 images: 3 units
    commit, calls = group.ConfigGroup.commit_unit, []

    def interrupted_at_the_second_unit(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(group.ConfigGroup, "commit_unit", interrupted_at_the_second_unit)
    args = ["extract", str(image_tree), "--store", str(tmp_path / "s.zarr"), "-b", "tiny_test", "--weights", "random",
            "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 130, result.output
    assert "8 of 24 images saved (8 in this run)" in result.stderr and "resume" in result.stderr
    monkeypatch.setattr(group.ConfigGroup, "commit_unit", commit)
    rerun = json.loads(CliRunner().invoke(cli, [*args, "--json"]).stdout)["configs"][0]
    assert (rerun["reused"], rerun["extracted"]) == (8, 16)


def test_a_rerun_with_another_split_is_refused_unless_resplit(image_tree, tmp_path):
    """A forgotten or changed --split would move images between train and test under the runs
    trained on the old split: refused, naming both splits and the flag; --resplit does it."""
    store = tmp_path / "s.zarr"
    args = ["extract", str(image_tree), "--store", str(store), "-b", "tiny_test", "--weights", "random", "-q"]
    assert CliRunner().invoke(cli, [*args, "--split", "50/25/25"]).exit_code == 0
    same = CliRunner().invoke(cli, [*args, "--split", "0.5/0.25/0.25"])  # the same fractions, written otherwise
    assert same.exit_code == 0, same.output
    refused = CliRunner().invoke(cli, [*args, "--split", "80/10/10"])
    assert refused.exit_code == 2
    assert "--split" in refused.stderr and "50/25/25" in refused.stderr and "--resplit" in refused.stderr
    with open_store(store) as st:
        assert st.manifests.stored_split() == "50/25/25"
    assert CliRunner().invoke(cli, [*args, "--split", "80/10/10", "--resplit"]).exit_code == 0
    with open_store(store) as st:
        assert st.manifests.stored_split() == "80/10/10"


def test_a_rerun_with_other_options_says_it_adds_a_second_configuration(image_tree, tmp_path):
    args = ["extract", str(image_tree), "--store", str(tmp_path / "s.zarr"), "-b", "tiny_test", "--weights", "random",
            "-q"]
    first = json.loads(CliRunner().invoke(cli, [*args, "--json"]).stdout)
    assert first["added_beside"] == []
    result = CliRunner().invoke(cli, [*args, "--augment", "1"])
    assert result.exit_code == 0
    assert f"beside {first['configs'][0]['key']}" in result.stderr and "augmented_views 0 -> 1" in result.stderr


def test_an_image_folder_given_as_a_store_says_so(image_tree):
    result = CliRunner().invoke(cli, ["verify", str(image_tree)])
    assert result.exit_code == 2 and "is a folder, not a feature store" in result.stderr
    assert f"featcache extract {image_tree} --store" in result.stderr


def test_an_install_remedy_names_this_interpreter_not_whichever_pip_is_first():
    from featcache.install import pip_install

    assert pip_install("featcache[dask]") == f"{sys.executable} -m pip install 'featcache[dask]'"
