"""Images read from a bucket: `featcache extract s3://bucket/prefix/` against a REAL S3-compatible
server on the loopback (moto's server mode), reached through the ordinary client configuration
(AWS_ENDPOINT_URL and a key pair in the environment). Nothing here is mocked: the tests only
make a race deterministic (an object deleted right after the listing, the server stopped right
after the scan)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY

from featcache.cli import cli
from featcache.extraction import pipeline
from featcache.ingest import sources
from featcache.stores import open_store

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")

KEY_ID, SECRET = "AKIAFEATCACHETEST01", "fEaTcAcHe/SeCrEt+KeY0123456789abcdefXYZ"
BUCKET = "photos"
CLASSES, PER_CLASS = ("s1", "s2", "s3"), 4


@contextmanager
def time_limit(seconds: int):
    """Fail instead of hanging: SIGALRM raises in the main thread."""
    def expired(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def start_server(monkeypatch) -> moto_server.ThreadedMotoServer:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    return server


@pytest.fixture(scope="module")
def bucket(tmp_path_factory, orl_dir):
    """A moto server on 127.0.0.1 holding 12 ORL photos under s3://photos/orl/ (3 classes), and
    the same files in a local folder."""
    mp = pytest.MonkeyPatch()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        mp.delenv(name, raising=False)
    mp.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
    mp.setenv("FEATCACHE_SOURCE_ATTEMPTS", "3")
    mp.setenv("FEATCACHE_SOURCE_BACKOFF", "0.05")
    mp.setenv("FEATCACHE_SOURCE_TIMEOUT", "5")
    server = start_server(mp)
    local = tmp_path_factory.mktemp("orl") / "orl"
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    for c in CLASSES:
        for f in sorted((orl_dir / c).glob("*.pgm"))[:PER_CLASS]:
            (local / c).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, local / c / f.name)
            client.upload_file(str(f), BUCKET, f"orl/{c}/{f.name}")
    client.put_object(Bucket=BUCKET, Key="orl/README.txt", Body=b"not an image")
    yield {"local": local, "client": client, "mp": mp}
    server.stop()
    mp.undo()


def run(*args):
    with time_limit(120):
        return CliRunner().invoke(cli, [str(a) for a in args])


def extract(data, store, *more):
    return run("extract", data, "--store", store, "-b", TINY, "--weights", "random", "--augment", "1", "-q", *more)


def assert_same_stores(a: Path, b: Path):
    with open_store(a) as x, open_store(b) as y:
        mx, my = x.manifest(), y.manifest()
        assert (mx.paths, mx.digests, mx.classes) == (my.paths, my.digests, my.classes)
        assert np.array_equal(mx.labels, my.labels) and np.array_equal(mx.splits, my.splits)
        assert x.keys() == y.keys()
        for key in x.keys():  # the stored arrays themselves, row for row
            gx, gy = x[key], y[key]
            assert gx.row_digests() == gy.row_digests()
            cx, fx = gx.read_rows(slice(None), True)
            cy, fy = gy.read_rows(slice(None), True)
            np.testing.assert_array_equal(cx, cy)
            np.testing.assert_array_equal(fx, fy)
        np.testing.assert_array_equal(x.rows([TINY]).load(), y.rows([TINY]).load())


def secrets_in(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and (KEY_ID.encode() in p.read_bytes()
                                                                     or SECRET.encode() in p.read_bytes())]


def test_bucket_extract_equals_local_and_records_no_credential(bucket, tmp_path):
    r = extract(f"s3://{BUCKET}/orl/", tmp_path / "b.zarr", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["images"] == len(CLASSES) * PER_CLASS and result["classes"] == list(CLASSES)
    assert extract(bucket["local"], tmp_path / "l.zarr").exit_code == 0
    assert_same_stores(tmp_path / "b.zarr", tmp_path / "l.zarr")  # the same bytes: the same rows
    with open_store(tmp_path / "b.zarr") as st:
        assert st.manifest().data_root == f"s3://{BUCKET}/orl"
        assert "README.txt" in st.manifest().ignored

    # a rerun lists the bucket again and computes nothing; the local store's rows are reused too
    r = extract(f"s3://{BUCKET}/orl", tmp_path / "l.zarr", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["configs"][0]["extracted"] == 0

    fit = run("fit-head", tmp_path / "b.zarr", "-b", TINY, "--head", "logreg", "--out", tmp_path / "run", "-q",
              "--json")
    assert fit.exit_code == 0, fit.output
    info = run("info", tmp_path / "b.zarr", "--json")
    # the audit's duplicate check and contact sheets read the photos through the bucket
    audit = run("audit", tmp_path / "b.zarr", "-b", TINY, "--folds", "2", "--out", tmp_path / "audit", "--json")
    assert audit.exit_code == 0, audit.output
    assert (tmp_path / "audit" / "map.png").exists()
    # fine-tuning needs the images on local disk: one clear line, not a folder named s3:
    ft = run("fine-tune", tmp_path / "run", "--out", tmp_path / "ft", "-q")
    assert ft.exit_code == 2 and "local folder" in ft.stderr and "--data" in ft.stderr, ft.output
    for text in (r.output, fit.output, info.output, audit.output, ft.output):
        assert KEY_ID not in text and SECRET not in text
    assert not secrets_in(tmp_path)  # no store attribute (zarr.json), run folder file or array holds them
    assert any(p.name == "zarr.json" for p in (tmp_path / "b.zarr").rglob("*"))


class _Requests(logging.Handler):
    """The server's request log (werkzeug's access lines): what the client really asked."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_one_listing_and_one_get_per_image(bucket, tmp_path):
    log = logging.getLogger("werkzeug")
    requests = _Requests()
    log.addHandler(requests)
    log.setLevel(logging.INFO)
    try:
        r = extract(f"s3://{BUCKET}/orl/", tmp_path / "b.zarr")
    finally:
        log.removeHandler(requests)
        log.setLevel(logging.ERROR)
    assert r.exit_code == 0, r.output
    listings = [line for line in requests.lines if "list-type=2" in line]
    gets = [line for line in requests.lines if '"GET /photos/orl/' in line]
    assert len(listings) == 1 and "delimiter=&" in listings[0]  # one recursive listing, not one per folder
    assert len(gets) == len(CLASSES) * PER_CLASS  # each image read once: the reader decodes the digested bytes


def test_deleted_objects_are_skipped_with_a_reason(bucket, tmp_path, monkeypatch):
    client = bucket["client"]
    gone_at_scan, gone_at_read = f"orl/{CLASSES[0]}/1.pgm", f"orl/{CLASSES[1]}/2.pgm"
    real_list, real_scan = sources.FsspecSource.list_files, pipeline.scan

    def list_then_delete(self):
        files = real_list(self)
        client.delete_object(Bucket=BUCKET, Key=gone_at_scan)  # listed, gone before it is read
        return files

    def scan_then_delete(*args, **kwargs):
        m = real_scan(*args, **kwargs)
        client.delete_object(Bucket=BUCKET, Key=gone_at_read)  # digested, gone before it is decoded
        return m

    monkeypatch.setattr(sources.FsspecSource, "list_files", list_then_delete)
    monkeypatch.setattr(pipeline, "scan", scan_then_delete)
    monkeypatch.setenv("FEATCACHE_SOURCE_KEEP_MB", "0")  # the reader fetches again: no bytes kept from the scan
    try:
        r = extract(f"s3://{BUCKET}/orl/", tmp_path / "b.zarr", "--json")
    finally:
        for key in (gone_at_scan, gone_at_read):
            client.upload_file(str(bucket["local"] / key.split("/", 1)[1]), BUCKET, key)
    assert r.exit_code in (0, 1), r.output
    assert "Traceback" not in r.output
    skipped = {s["path"]: s["reason"] for s in json.loads(r.stdout)["skipped"]}
    assert skipped.keys() == {f"{CLASSES[0]}/1.pgm", f"{CLASSES[1]}/2.pgm"}, skipped
    assert all("404" in why for why in skipped.values()), skipped
    with open_store(tmp_path / "b.zarr") as st:
        assert len(st.rows([TINY])) == len(CLASSES) * PER_CLASS - 2


@pytest.fixture
def iam_server(monkeypatch):
    """moto in its own process with access control on (its first 4 requests unauthenticated: the
    set-up below), so a bucket reader's policy is enforced: a real 403."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="setup",
                           aws_secret_access_key="setup")
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        yield endpoint, iam, key
    finally:
        proc.terminate()
        proc.wait(10)


def test_access_denied_object_is_a_skip(bucket, iam_server, tmp_path, monkeypatch):
    endpoint, iam, key = iam_server
    denied = f"orl/{CLASSES[0]}/3.pgm"
    iam.put_user_policy(UserName="reader", PolicyName="most", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/{denied}"}]}))
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    client = boto3.session.Session().client("s3")  # a fresh session: the reader's key, not the module's
    client.create_bucket(Bucket=BUCKET)
    for f in sorted((bucket["local"] / CLASSES[0]).glob("*.pgm")):
        client.upload_file(str(f), BUCKET, f"orl/{CLASSES[0]}/{f.name}")
    for f in sorted((bucket["local"] / CLASSES[1]).glob("*.pgm"))[:2]:
        client.upload_file(str(f), BUCKET, f"orl/{CLASSES[1]}/{f.name}")
    r = extract(f"s3://{BUCKET}/orl/", tmp_path / "b.zarr", "--json")
    assert r.exit_code in (0, 1) and "Traceback" not in r.output, r.output
    skipped = {s["path"]: s["reason"] for s in json.loads(r.stdout)["skipped"]}
    assert skipped == {f"{CLASSES[0]}/3.pgm": "access denied (403)"}
    assert json.loads(r.stdout)["images"] == PER_CLASS + 1
    assert key["SecretAccessKey"] not in r.output and not [
        p for p in (tmp_path / "b.zarr").rglob("*") if p.is_file() and key["SecretAccessKey"].encode() in p.read_bytes()]


def test_server_gone_midway_is_one_clear_error_then_resumes(bucket, tmp_path, monkeypatch):
    """The server stops right after the scan: the reads fail, are retried, then the run stops with
    one error line (no traceback, no hang). A server back at another port: the run resumes."""
    real_scan = pipeline.scan

    def scan_then_stop(*args, **kwargs):
        m = real_scan(*args, **kwargs)
        server.stop()
        return m

    server = start_server(monkeypatch)  # a second server on the same (in-process) buckets
    monkeypatch.setattr(pipeline, "scan", scan_then_stop)
    monkeypatch.setenv("FEATCACHE_SOURCE_KEEP_MB", "0")  # the reader must fetch: no bytes kept from the scan
    r = extract(f"s3://{BUCKET}/orl/", tmp_path / "b.zarr")
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.stderr.count("error:") == 1
    assert "cannot reach s3://photos" in r.stderr and "failed 3 times" in r.stderr

    monkeypatch.setattr(pipeline, "scan", real_scan)
    server = start_server(monkeypatch)
    try:
        assert extract(f"s3://{BUCKET}/orl/", tmp_path / "b.zarr").exit_code == 0
    finally:
        server.stop()
    assert extract(bucket["local"], tmp_path / "l.zarr").exit_code == 0
    assert_same_stores(tmp_path / "b.zarr", tmp_path / "l.zarr")


def test_server_gone_before_digests_leaves_no_store(bucket, tmp_path, monkeypatch):
    server = start_server(monkeypatch)
    real_list = sources.FsspecSource.list_files

    def list_then_stop(self):
        files = real_list(self)
        server.stop()
        return files

    monkeypatch.setattr(sources.FsspecSource, "list_files", list_then_stop)
    r = extract(f"s3://{BUCKET}/orl/", tmp_path / "b.zarr")
    assert r.exit_code == 2 and r.stderr.count("error:") == 1 and "cannot reach" in r.stderr, r.output
    assert not (tmp_path / "b.zarr").exists()  # refused before the store's first write


def test_refusals(bucket, tmp_path):
    r = extract(f"s3://{KEY_ID}:{SECRET}@{BUCKET}/orl/", tmp_path / "b.zarr")
    assert r.exit_code == 2 and "credentials" in r.stderr and SECRET not in r.stderr
    r = extract(f"s3://{BUCKET}/orl/", f"s3://{BUCKET}/feats.zarr")
    assert r.exit_code == 2 and "must be a local path" in r.stderr and "HDF5" in r.stderr, r.output
    assert not Path("s3:").exists()
    r = extract(f"s3://{BUCKET}/nothing-here/", tmp_path / "b.zarr")
    assert r.exit_code == 2 and "no images found in s3://photos/nothing-here" in r.stderr, r.output
    r = extract("s3://no-such-bucket/orl/", tmp_path / "b.zarr")
    assert r.exit_code == 2 and r.stderr.startswith("error:") and "Traceback" not in r.output, r.output


def test_missing_s3fs_is_one_line(bucket, tmp_path, monkeypatch):
    import fsspec  # noqa: F401

    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if not installed (and never imported by fsspec)
    monkeypatch.delitem(sys.modules["fsspec.registry"]._registry, "s3", raising=False)
    monkeypatch.setattr(sources, "_FILESYSTEMS", {})
    r = extract(f"s3://{BUCKET}/orl/", tmp_path / "b.zarr")
    assert r.exit_code == 2 and "needs the s3fs package" in r.stderr and r.stderr.count("\n") == 1, r.output
