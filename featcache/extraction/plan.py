"""Planning, the lock holder's job before any unit is computed: each feature config gets its store
group, its new images get rows, and its pending (or damaged) rows become chunk-aligned units."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from ..backbones.devices import largest_batch
from ..backbones.model import known_feature_dim
from ..config import FeatureConfig
from ..stores import FeatureStore, WorkUnit
from .runner import BackboneRunner


@dataclass(frozen=True)
class ConfigPlan:
    cfg: FeatureConfig
    key: str
    units: list[WorkUnit]
    batch_size: int  # the forward batch size the config was started with: a resume keeps it
    reused: int  # rows already computed
    runner: BackboneRunner | None = None  # built while planning when the feature size needs the model
    device: str | None = None  # TensorFlow device name; None: TensorFlow's choice

    @property
    def todo(self) -> int:
        return sum(len(u.rows) for u in self.units)

    @property
    def repaired(self) -> int:
        return sum(len(u.repairs) for u in self.units)

    def runner_factory(self, together: tuple[FeatureConfig, ...] = ()) -> Callable[[], BackboneRunner]:
        """The network that computes this plan's features (and ``together``'s in the same pass): the
        one built while planning when it computes exactly that, else a new one."""
        if self.runner is not None and self.runner.together == tuple(together):
            return lambda: self.runner
        return lambda: BackboneRunner(self.cfg, self.batch_size, self.device, tuple(together))


def check_new_configs(st: FeatureStore, configs: list[FeatureConfig], batch_size: int | str,
                      device: str | None = None) -> dict[FeatureConfig, BackboneRunner]:
    """The network of every config the store does not hold yet, built (its weights loaded) before
    anything of it is recorded: missing weights, a failed download or a bad weights file then
    leave no empty configuration behind. A new final config is built with its new taps, the one
    network their shared pass runs (same weights: the taps are checked by it). The runners serve
    the extraction that follows."""
    new = [c for c in configs if st.find_config(c) is None]
    finals = {c for c in new if not c.backbone.tap}
    size = batch_size if isinstance(batch_size, int) else 1  # "auto" sets its own on the runner
    taps = {f: tuple(c for c in new if c.backbone.tap and untapped(c) == f) for f in finals}
    return {c: BackboneRunner(c, size, device, taps.get(c, ())) for c in new
            if not (c.backbone.tap and untapped(c) in finals)}


def plan_config(st: FeatureStore, cfg: FeatureConfig, digests: list[str], batch_size: int | str,
                chunk_rows: int | None, device: str | None = None, runner: BackboneRunner | None = None
                ) -> ConfigPlan:
    """``runner``: the config's network if already built (check_new_configs)."""
    # A resume keeps the batch size the config was started with: other batch shapes round differently
    found = st.find_config(cfg)
    batch_size = (st[found].batch_size() if found is not None else None) or batch_size
    if batch_size == "auto":
        batch_size, runner = _largest_batch(cfg, device, runner)
    elif runner is not None:
        runner.batch_size = batch_size
    dim = known_feature_dim(cfg.backbone)
    if dim is None:  # flatten: the size depends on the spatial output, so build the model first
        runner = runner or BackboneRunner(cfg, batch_size, device)
        dim = runner.dims[0]
    key = st.ensure_config(cfg, dim, chunk_rows, batch_size)
    units = st[key].plan(digests)
    if units and st[key].batch_size() is None:  # a config of an older featcache: from now on, this one
        st[key].record_batch_size(batch_size)
    return ConfigPlan(cfg, key, units, batch_size, len(set(digests)) - sum(len(u.rows) for u in units), runner,
                      device)


def _largest_batch(cfg: FeatureConfig, device: str | None, runner: BackboneRunner | None = None
                   ) -> tuple[int, BackboneRunner | None]:
    """--batch-size auto: the largest batch one forward pass fits in memory, and the model it
    was tried on (None on a CPU, where nothing is tried, unless one was given)."""

    def fits(batch: int) -> None:
        nonlocal runner
        runner = runner or BackboneRunner(cfg, batch, device)
        runner.batch_size = batch
        size = cfg.backbone.input_size
        runner(np.zeros((batch, size, size, 3), np.uint8))

    batch = largest_batch(fits, device)
    if runner is not None:
        runner.batch_size = batch
    return batch, runner


def shared_passes(st: FeatureStore, plans: list[ConfigPlan]) -> list[list[ConfigPlan]]:
    """The plans in groups computed in one forward pass: the taps of one network (configs equal but
    for the tap) with the same batch size, device and pending rows; every other plan alone. The
    numbers are the same either way (one model with several outputs runs the same operations)."""
    groups: list[list[ConfigPlan]] = []
    for plan in plans:
        group = next((g for g in groups if _one_pass(st, g[0], plan)), None)
        if group is None:
            groups.append([plan])
        else:
            group.append(plan)
    return groups


def untapped(cfg: FeatureConfig) -> FeatureConfig:
    return replace(cfg, backbone=replace(cfg.backbone, tap=""))


def _one_pass(st: FeatureStore, a: ConfigPlan, b: ConfigPlan) -> bool:
    def rows(p: ConfigPlan) -> list:
        return [(u.start, u.stop, u.rows) for u in p.units]

    return (bool(a.units) and untapped(a.cfg) == untapped(b.cfg) and (a.batch_size, a.device) == (b.batch_size, b.device)
            and rows(a) == rows(b) and list(st[a.key].row_digests()) == list(st[b.key].row_digests()))
