"""What the search tries: ``Candidate`` records (feature configurations, a head and its parameters,
how several configurations are combined, test-time augmentation), and the grids they come from.

A candidate is a frozen record: its ``record()`` is what a leaderboard stores and what its digest
is taken of, so a resumed search recognises the candidates it already scored. ``cost()`` orders
candidates from cheapest to dearest (fewest backbone networks, a network's taps counting once as
they run in one forward pass; then the smallest head, the fewest features, the fewest
configurations, no TTA, concatenation before an ensemble): among statistically tied
candidates the cheapest wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ParameterError
from ..heads import EnsembleHead, Head, get_head_class, make_head

# the main parameter(s) of each built-in head, a few values each: a small grid, not a sweep
DEFAULT_GRIDS: dict[str, tuple[dict[str, Any], ...]] = {
    "logreg": ({"C": 0.01}, {"C": 0.1}, {"C": 1.0}, {"C": 10.0}),
    "linear": ({},),
    "knn": ({"k": 5}, {"k": 20}),
    "mlp": ({"hidden": 128, "dropout": 0.5}, {"hidden": 256, "dropout": 0.2}),
}
DEFAULT_HEADS = ("logreg", "linear", "knn", "mlp")
# inference and training cost of a head: linear models, then a neighbour bank, then a network
HEAD_COST = {"logreg": 0, "linear": 0, "knn": 1, "mlp": 2}
OTHER_HEAD_COST = 3  # a plugin's head: dearest, unless its grid says otherwise
QUICK_HEADS = ("logreg", "knn")  # fitted in moments (no training loop): searched first


@dataclass(frozen=True)
class Candidate:
    keys: tuple[str, ...]  # feature configurations, in concatenation order
    head: str
    params: tuple[tuple[str, Any], ...] = ()  # the head's parameters that differ from its defaults, sorted
    combine: str = "concat"  # several keys: one head on the concatenation, or an ensemble of one per key
    tta: bool = False  # held-out images scored on the mean over their cached views
    phase: str = field(default="single", compare=False)  # which step of the search proposed it

    @classmethod
    def of(cls, keys, head: str, params: dict | None = None, combine: str = "concat", tta: bool = False,
           phase: str = "single") -> Candidate:
        return cls(tuple(keys), head, tuple(sorted((params or {}).items())), combine, tta, phase)

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    def record(self) -> dict:
        """What identifies the candidate (JSON): its digest is taken of this."""
        return {"keys": list(self.keys), "head": self.head, "params": self.param_dict, "combine": self.combine,
                "tta": self.tta}

    @classmethod
    def from_record(cls, d: dict, phase: str = "single") -> Candidate:
        return cls.of(d["keys"], d["head"], d.get("params") or {}, d.get("combine", "concat"),
                      bool(d.get("tta", False)), phase)

    @property
    def label(self) -> str:
        join = " + " if self.combine == "concat" else " | "
        params = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params)
        extra = " tta" if self.tta else ""
        return f"{join.join(self.keys)} / {self.head}{f' {params}' if params else ''}{extra}"

    def cost(self, dims: dict[str, int], networks: dict[str, str] | None = None) -> tuple:
        """Cheapest first: backbone networks (``networks``: key -> the network it runs; taps of one
        network are one forward pass, so they count once), head, features, configurations, TTA,
        ensemble."""
        nets = len({(networks or {}).get(k, k) for k in self.keys})
        return (nets, HEAD_COST.get(self.head, OTHER_HEAD_COST), sum(dims[k] for k in self.keys), len(self.keys),
                int(self.tta), int(self.combine == "ensemble"))

    def make_head(self, dims: dict[str, int], seed: int) -> Head:
        """The unfitted head this candidate trains (an ensemble of one per key when so combined)."""
        head = make_head(self.head, self.param_dict, seed=seed)
        return EnsembleHead.of(head, [dims[k] for k in self.keys]) if self.combine == "ensemble" else head


def head_grids(heads: tuple[str, ...] | None = None,
               grids: dict[str, tuple[dict, ...]] | None = None) -> dict[str, tuple[dict, ...]]:
    """Each head's grid: ``grids`` where given, else the built-in one, else its defaults alone.
    Every value is checked against the head's declarations now, not in the middle of a search."""
    heads = tuple(heads) if heads else DEFAULT_HEADS
    if not heads:
        raise ParameterError("heads", "give at least one head")
    out = {}
    for name in heads:
        cls = get_head_class(name)  # unknown: the registry's error, naming the heads there are
        grid = tuple((grids or {}).get(name) or DEFAULT_GRIDS.get(name, ({},)))
        for point in grid:
            for k, v in point.items():
                cls.param(k).validate(v)
        out[name] = grid
    return out


def single_candidates(keys: list[str], grids: dict[str, tuple[dict, ...]]) -> list[Candidate]:
    """Each configuration alone with each head and each point of its grid: the cheapest heads
    first, so a small budget still covers every configuration."""
    order = sorted(grids, key=lambda h: HEAD_COST.get(h, OTHER_HEAD_COST))
    return [Candidate.of([k], h, point) for h in order for point in grids[h] for k in keys]


def extensions(current: Candidate, ranked_keys: list[str], top: int) -> list[Candidate]:
    """Greedy forward selection: ``current``'s configurations plus one more of the ``top`` best
    single configurations (``ranked_keys``, best first), with ``current``'s head."""
    pool = [k for k in ranked_keys[:top] if k not in current.keys]
    return [Candidate.of([*current.keys, k], current.head, current.param_dict, phase="concat") for k in pool]


__all__ = ["DEFAULT_GRIDS", "DEFAULT_HEADS", "HEAD_COST", "QUICK_HEADS", "Candidate", "extensions", "head_grids",
           "single_candidates"]
