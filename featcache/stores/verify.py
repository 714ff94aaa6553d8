"""verify_store(): check everything a store holds against its checksums, and say what to do."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import FeatcacheError, Remedy, Step
from . import open_store
from .hdf5_backend import HDF5Backend
from .schema import DIGEST, PENDING


@dataclass
class ConfigCheck:
    key: str
    rows: int = 0  # stored rows that belong to an image (current or not)
    extracted: int = 0  # of those, rows computed (done or failed): 0 is an empty configuration
    damaged: list[str] = field(default_factory=list)  # current images whose features are damaged
    damaged_orphans: int = 0  # damaged rows of images no longer in the manifest
    verifiable: bool = True  # False: written before checksums (schema 1), not extracted since
    problems: list[str] = field(default_factory=list)  # arrays that cannot be read at all

    @property
    def clean(self) -> bool:
        return not (self.damaged or self.damaged_orphans or self.problems)


@dataclass
class VerifyReport:
    store: str
    data_root: str | None
    images: int
    manifest_problem: str | None  # None: the image list passed its checksums
    configs: list[ConfigCheck]
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.manifest_problem is None and all(c.clean for c in self.configs)

    def remedy(self) -> Remedy | str:
        if self.clean:
            return ""
        return Remedy("run {} with the options of each damaged configuration ({} lists them): it recomputes "
                      "exactly the damaged rows (and rewrites a damaged image list)",
                      Step.of("extract", data_dir=self.data_root or "DATA_DIR", store=self.store),
                      Step.of("info", store=self.store))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["clean"] = self.clean
        d["remedy"] = str(self.remedy())
        return d


def verify_store(path) -> VerifyReport:
    """Read every array of the store and check its checksums: the manifest, and every row of every
    feature config (its digest, status and feature bytes). Never writes."""
    with open_store(path) as st:
        manifest, problem, notes = None, None, []
        try:
            manifest = st.manifest()
            if not manifest.verifiable:
                notes.append("the image list was written before checksums (schema 1): not verifiable; the next "
                             "extract into this store adds them")
        except FeatcacheError as exc:
            problem = str(exc)
        if isinstance(st.backend, HDF5Backend) and st.backend.journal_pending():
            notes.append(f"an interrupted extract left its work in {st.path}.journal (not checked here): run the "
                         "same extract again to finish and commit it")
        configs = [_check_config(st, key, manifest) for key in st.keys()]
        for c in configs:
            if not c.verifiable:
                notes.append(f"{c.key} was written before checksums (schema 1): not verifiable; the next "
                             "extract of it adds them, from its data as it is then")
        return VerifyReport(str(st.path), manifest.data_root if manifest else None, len(manifest) if manifest else 0,
                            problem, configs, notes)


def _check_config(st, key: str, manifest) -> ConfigCheck:
    group = st[key]
    check = ConfigCheck(key, verifiable=group.verifiable())
    check.problems += group.check_arrays()
    if not group.record_intact():
        check.problems.append(f"{group.name}: its record (preprocessing, input size, seed, chunk layout) fails its "
                              "digest: it was changed after the rows were made")
    if not check.verifiable or check.problems:
        return check
    try:
        digests = group.row_digests()
    except Exception as exc:  # noqa: BLE001
        check.problems.append(f"{group.array(DIGEST)} cannot be read ({type(exc).__name__})")
        return check
    check.rows = sum(1 for d in digests if d)
    status = group.status_tolerant(len(digests))
    check.extracted = int(sum(1 for d, s in zip(digests, status.tolist(), strict=True) if d and s != PENDING))
    bad = {digests[r] for r in group.damaged()}
    if manifest is not None:
        check.damaged = [p for p, d in zip(manifest.paths, manifest.digests, strict=True) if d in bad]
        bad -= set(manifest.digests)
    check.damaged_orphans = len(bad)
    return check


__all__ = ["ConfigCheck", "VerifyReport", "verify_store"]
