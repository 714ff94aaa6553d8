"""audit(): one store's cached features -> likely label errors, duplicates and outliers."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import FeatcacheError
from ..train.run import replaced_folder
from .duplicates import candidate_pairs, confirm_pairs, group_duplicates
from .images import ImageFiles
from .knn import search, unit_rows
from .label_errors import label_scores, out_of_fold_probabilities
from .options import AuditOptions
from .outliers import knn_distance, rank_outliers
from .records import AuditResult, LabelIssue, Outlier, group_leaks
from .report import REPORT_FILE, write_report
from .source import load_images

MIN_IMAGES = 3


def audit(store: str | Path, backbone: str | None, options: AuditOptions | None = None, *, out: str | Path | None = None,
          progress: bool = False) -> AuditResult:
    """Audit the images of ``store`` through the cached features of ``backbone`` (a name or key);
    with ``out``, write contact sheets, the map, flagged.csv and audit.json there."""
    options = options or AuditOptions()
    clock = _Clock()
    stored = load_images(store, backbone, group_by=options.group_by)
    key, fs, refs, n = stored.key, stored.features, stored.refs, len(stored.refs)
    if n < MIN_IMAGES:
        raise FeatcacheError(f"{store} has features of {n} image(s) for {key}; an audit needs at least {MIN_IMAGES}")
    if fs.label_sets is not None:  # label errors are scored against one label per image
        raise FeatcacheError(f"{store} has several labels per image; the audit scores one label per image and "
                             "does not read label sets yet")
    files = ImageFiles(options.image_root or stored.data_root, fs.paths)
    clock.lap("load")

    proba = out_of_fold_probabilities(fs.features, fs.labels, len(fs.classes), folds=options.folds, C=options.C,
                                      seed=options.seed, progress=progress)
    scores, suggested, flagged = label_scores(proba, fs.labels, options.score)
    label_issues = [LabelIssue(refs[i], fs.classes[suggested[i]], float(proba[i, fs.labels[i]]),
                               float(proba[i, suggested[i]]), float(scores[i])) for i in flagged.tolist()]
    clock.lap("label_errors")

    unit = unit_rows(fs.features[:, 0])
    neighbours = search(unit, None, max(options.k, options.duplicate_k))
    clock.lap("neighbours")

    pairs, similarity = candidate_pairs(neighbours, fs.digests, options.duplicate_similarity)
    confirmed, unverified = confirm_pairs(pairs, similarity, files, options.pixel_tolerance, progress)
    duplicates = group_duplicates(refs, fs.digests, confirmed)
    clock.lap("duplicates")

    distance = knn_distance(neighbours, options.k)
    far, z = rank_outliers(distance, options.outlier_z)
    outliers = [Outlier(refs[i], float(distance[i]), float(z[i])) for i in far.tolist()]

    result = AuditResult(
        store=str(store), key=key, classes=list(fs.classes), n_images=n, label_issues=label_issues,
        duplicates=duplicates, outliers=outliers,
        out_of_fold_accuracy=float(np.mean(proba.argmax(axis=1) == fs.labels)), unverified_pairs=unverified,
        options=options.to_dict(), group_leaks=group_leaks(refs), seconds=clock.seconds)
    if out is not None:
        with replaced_folder(out, REPORT_FILE) as (staging, final):  # a killed audit leaves the last report whole
            write_report(staging, result, unit, fs.labels, files, options.sheet_size, options.map, options.seed,
                         final=final)
        clock.lap("report")
    return result


class _Clock:
    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self.last, 3)
        self.last = now
