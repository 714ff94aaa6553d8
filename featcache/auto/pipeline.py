"""``auto()``: a store -> the best probe it can make, chosen honestly, as a run folder.

1. The search (search.py, candidates.py): each configuration alone with each head and a small grid
   of its main parameters; then greedy forward selection of concatenations among the best few
   configurations (each step adds the configuration that helps most, and the search stops when
   none helps); an ensemble of the chosen set; TTA where augmented views are cached. Every
   candidate is scored by K-fold cross-validation on the train + validation images only, on one
   fold plan, so any two can be tested against each other. The budget (budget.py) stops it; an
   interrupt stops it too, keeping the leaderboard.
2. The choice (selection.py): the best mean, the candidates tied with it, the cheapest of those.
3. Then, and only then, the test split is read: the winner is fitted as fitting a head does
   (train, validation as validation; optionally refitted on both, calibrated) and scored once on
   test. The output folder becomes that fit's run folder (export and predict read it), with the
   leaderboard beside the head, and the call that reproduces it (``reproduce``: a ``Step`` of
   ``fit_head``, worded by the caller).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import FeatcacheError, ParameterError, Remedy, Step
from ..heads import make_head
from ..progress import progress_bar
from ..stores import open_store
from ..stores.lock import RunLock
from ..train.fit import fit_on_data, load_training_data, write_run
from ..train.memory import resolve_memory_limit
from ..train.probe import ProbeOptions
from ..train.run import CONFIG_FILE, make_folder
from ..train.stats import METHOD
from .budget import Budget, parse_budget
from .candidates import QUICK_HEADS, Candidate, extensions, head_grids, single_candidates
from .leaderboard import FILES, Entry, read_entries, write_board
from .search import LOWER_IS_BETTER, FoldPool, OutOfTime, better, candidate_digest, check_metric, score
from .selection import Selection, check_prefer, select

RULE = ("tied: a corrected paired t-test against the best is not significant (p >= 0.05); among tied candidates "
        "the cheapest wins (fewest backbone networks, a network's taps counting once; then logreg/linear < knn < "
        "mlp; then fewest features)")
TIE_BREAK = "log_loss"  # orders candidates of equal score and cost
ADJUSTED = ("selection-adjusted: each fold scored by the candidate the same rule picks from the other folds' "
            "scores: an estimate of the whole search, not of the maximum of many")


@dataclass(frozen=True)
class AutoOptions:
    budget: Budget = field(default_factory=lambda: parse_budget(None))
    metric: str = "accuracy"
    folds: int = 5
    seed: int = 0
    heads: tuple[str, ...] | None = None  # None: every built-in head that fits cached features
    grids: dict | None = None  # head -> tuple of parameter dicts (default: candidates.DEFAULT_GRIDS)
    backbones: tuple[str, ...] | None = None  # None: every configuration of the store
    prefer: str = "cheapest"  # or "best": the best mean even when a cheaper candidate is tied with it
    top: int = 3  # concatenations are drawn from this many best single configurations
    ensembles: bool = True
    tta: bool = True  # also try the leader with TTA, where views are cached
    refit: bool = True  # the winner refitted on train + validation
    calibrate: bool = False
    memory_limit: str | int | None = None
    progress: bool = True

    def __post_init__(self):
        object.__setattr__(self, "budget", parse_budget(self.budget))
        check_metric(self.metric)
        check_prefer(self.prefer)
        if self.folds < 2:
            raise ParameterError("folds", f"needs at least 2 folds, got {self.folds}")
        if self.top < 1:
            raise ParameterError("top", f"must be at least 1, got {self.top}")


@dataclass
class AutoResult:
    store: str
    out: str | None
    options: AutoOptions
    entries: list[Entry]  # best first
    selection: Selection  # indices into entries
    stopped: str  # why the search ended
    resumed: int  # entries read back from an earlier search
    images: int
    folds: int
    grouped: bool
    note: str
    skipped: dict[str, str]
    test: dict | None = None  # the winner's test metrics (None: no test images)
    validation: dict | None = None
    run_dir: str | None = None
    reproduce: Step | None = None
    command: str | None = None  # ``reproduce`` worded by the caller
    seconds: float = 0.0
    record: dict = field(default_factory=dict, repr=False)  # what leaderboard.json holds

    @property
    def winner(self) -> Entry:
        return self.entries[self.selection.winner]

    def to_dict(self) -> dict:
        return self.record


def auto(store: str | Path, out: str | Path | None = None, options: AutoOptions | None = None,
         word_step=str) -> AutoResult:
    """Search ``store`` for the best probe (see the module) and, with ``out``, write the winner's
    run folder there with leaderboard.json and leaderboard.csv; a second call with the same ``out``
    resumes the search. ``word_step`` words the reproducing ``Step`` (default: as a call)."""
    opts = options or AutoOptions()
    started = time.perf_counter()
    folder = _check_out(out)
    with open_store(store) as st:
        path = str(Path(st.path).resolve())
        keys, skipped = _usable(st, opts.backbones)
        pool = FoldPool(st, keys, opts.folds, opts.seed, resolve_memory_limit(opts.memory_limit))
        lock = _take(folder)
        try:
            board = _resumed(pool, folder)
            resumed = len(board)

            def save(stopped: str | None = None) -> None:
                if folder is not None:
                    write_board(folder, _record(path, folder, opts, pool, board, skipped, stopped, resumed))

            stopped = _search(pool, opts, board, save)
            save(stopped)
        finally:
            if lock is not None:
                lock.release()
    entries, sel = _ranked(board, opts, pool.plan.test_over_train)
    result = AutoResult(store=path, out=str(folder) if folder else None, options=opts, entries=entries,
                        selection=sel, stopped=stopped, resumed=resumed, images=len(pool.paths),
                        folds=pool.plan.folds, grouped=pool.plan.grouped, note=pool.plan.note, skipped=skipped)
    result = _fit_winner(result, opts, word_step)  # the test split is read here, once
    result.seconds = round(time.perf_counter() - started, 2)
    result.record = _record(path, folder, opts, pool, board, skipped, stopped, resumed, result)
    if folder is not None:
        write_board(folder, result.record)
    return result


# -- the steps ---------------------------------------------------------------------------------------

def _check_out(out) -> Path | None:
    if out is None:
        return None
    folder = Path(out).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise ParameterError("out", f"{folder} is a file, not a folder; choose another path")
    if folder.is_dir() and not (folder / CONFIG_FILE).exists() and any(p.name not in FILES for p in folder.iterdir()):
        raise ParameterError("out", f"{folder} exists and is neither a run folder nor a search's; choose another "
                                    "folder")
    return folder


def _take(folder: Path | None) -> RunLock | None:
    """The output folder made, and its lock (one writer) held while the search writes its leaderboard."""
    if folder is None:
        return None
    make_folder(folder, "out")
    return RunLock.acquire(folder)


def _usable(st, backbones) -> tuple[list[str], dict[str, str]]:
    """The configurations to search (complete ones; the others skipped, with why)."""
    if st.manifest().multilabel:
        raise FeatcacheError(f"{st.path} has several labels per image; the search scores one label per image",
                             remedy=Remedy("fit a head on it with {}",
                                           Step.of("fit_head", store=st.path, backbones="NAME", out="RUN_DIR")))
    keys = [st.resolve_key(b) for b in backbones] if backbones else st.keys()
    if not keys:
        raise FeatcacheError(f"{st.path} holds no features yet",
                             remedy=Remedy("run {} first", Step.of("extract", data_dir="DATA_DIR", store=st.path)))
    usable, skipped = [], {}
    for k in dict.fromkeys(keys):
        try:
            st.rows([k])  # lazy: refuses incomplete or damaged records, reads no features
            usable.append(k)
        except FeatcacheError as exc:
            skipped[k] = str(exc)
    if not usable:
        raise FeatcacheError("no feature configuration can be searched: " +
                             "; ".join(f"{k}: {why}" for k, why in skipped.items()))
    return usable, skipped


def _resumed(pool: FoldPool, folder: Path | None) -> dict[str, Entry]:
    """The earlier search's entries that still hold: same images, folds and features."""
    if folder is None:
        return {}
    out = {}
    for e in read_entries(folder):
        if all(k in pool.dims for k in e.candidate.keys) and candidate_digest(pool, e.candidate) == e.digest:
            out[e.digest] = replace(e, cost=pool.cost(e.candidate))  # costs as this version counts them
    return out


def _search(pool: FoldPool, opts: AutoOptions, board: dict[str, Entry], save) -> str:
    """Score the proposals until the budget ends or none is left; returns why it stopped."""
    started = time.monotonic()
    deadline = None if opts.budget.seconds is None else started + opts.budget.seconds
    bar = progress_bar(total=opts.budget.candidates or 0, desc="auto", unit="cand", enabled=opts.progress)
    if opts.budget.candidates is None:
        bar.total = None
    bar.update(min(len(board), opts.budget.candidates or len(board)))
    try:
        for c in _proposals(pool, opts, board):
            d = candidate_digest(pool, c)
            if d in board:
                continue
            why = opts.budget.exhausted(started, len(board))
            if why:
                return why
            try:
                scored = score(pool, c, opts.seed, deadline if board else None)  # the first is always finished
            except OutOfTime:
                return f"{opts.budget.exhausted(started, len(board))} (in the middle of {c.label}: left out)"
            board[d] = Entry(c, d, scored, pool.feature_dim(c), pool.cost(c))
            save()
            best = _leader(list(board.values()), opts.metric)
            bar.update(1)
            bar.set_postfix_str(f"best {best.score.intervals[opts.metric].mean:.4f} {best.candidate.label}")
        return "every candidate scored"
    finally:
        bar.close()


def _mean(e: Entry, metric: str) -> float:
    return e.score.intervals[metric].mean


def _rank_key(e: Entry, metric: str) -> tuple:
    """Best mean first; of equal means the lower log-loss, then the cheaper."""
    sign = -1 if metric in LOWER_IS_BETTER else 1
    return (-sign * _mean(e, metric), _mean(e, TIE_BREAK), e.cost)


def _leader(entries: list[Entry], metric: str) -> Entry | None:
    return min(entries, key=lambda e: _rank_key(e, metric)) if entries else None


def _proposals(pool: FoldPool, opts: AutoOptions, board: dict[str, Entry]):
    """The candidates in the order they are tried; the later steps read the scores of the earlier.
    The quick heads' singles first, then the greedy concatenations from their leader, an ensemble
    of the set chosen and the leader with TTA, so a short budget reaches combinations; then the
    trained heads' singles (and the same steps from one of them if it leads)."""
    grids = head_grids(opts.heads, opts.grids)
    quick = {h: g for h, g in grids.items() if h in QUICK_HEADS}
    trained = {h: g for h, g in grids.items() if h not in QUICK_HEADS}

    def scored(cands: list[Candidate]) -> list[Entry]:
        return [board[d] for d in (candidate_digest(pool, c) for c in cands) if d in board]

    def extras(chosen: Entry | None):
        """An ensemble of the chosen set, and the leader with TTA (each once: a candidate scored
        already is skipped)."""
        if chosen is not None and opts.ensembles and len(chosen.candidate.keys) >= 2:
            yield replace(chosen.candidate, combine="ensemble", phase="ensemble")
        top = _leader(list(board.values()), opts.metric)
        if opts.tta and top is not None and not top.candidate.tta and pool.min_views(top.candidate) > 1:
            yield replace(top.candidate, tta=True, phase="tta")

    singles = single_candidates(pool.keys, quick)
    yield from singles
    chosen = yield from _greedy(pool, opts, scored, singles)
    yield from extras(chosen)
    if trained:
        more = single_candidates(pool.keys, trained)
        yield from more
        leader = _leader(scored(singles + more), opts.metric)
        if leader is not None and leader.candidate.head in trained:
            chosen = yield from _greedy(pool, opts, scored, singles + more)
            yield from extras(chosen)


def _greedy(pool: FoldPool, opts: AutoOptions, scored, singles: list[Candidate]):
    """Greedy forward selection from the leader of ``singles``: add the configuration (of the
    ``top`` best) that helps most, while one helps. Returns the entry it ends on."""
    current = _leader(scored(singles), opts.metric)
    if current is None or len(pool.keys) < 2 or opts.top < 2:
        return current
    per_key = {k: _leader([e for e in scored(singles) if e.candidate.keys == (k,)], opts.metric) for k in pool.keys}
    ranked = sorted((k for k in pool.keys if per_key[k] is not None),
                    key=lambda k: (_rank_key(per_key[k], opts.metric), pool.keys.index(k)))
    while True:
        ext = extensions(current.candidate, ranked, opts.top)
        if not ext:
            return current
        yield from ext
        step = _leader(scored(ext), opts.metric)
        if step is None or not better(opts.metric, _mean(step, opts.metric), _mean(current, opts.metric)):
            return current
        current = step


def _ranked(board: dict[str, Entry], opts: AutoOptions, test_over_train: float) -> tuple[list[Entry], Selection]:
    entries = sorted(board.values(), key=lambda e: _rank_key(e, opts.metric))
    if not entries:
        raise FeatcacheError("the search scored no candidate", remedy="give it a larger budget")
    sel = select([e.score.folds[opts.metric] for e in entries], [e.cost for e in entries], opts.metric,
                 test_over_train, opts.prefer, tie_break=[e.score.folds[TIE_BREAK] for e in entries])
    return entries, sel


def _fit_winner(result: AutoResult, opts: AutoOptions, word_step) -> AutoResult:
    """The winner fitted as a head is fitted (the test split read, once), its run folder written."""
    c = result.winner.candidate
    probe = ProbeOptions(tta=c.tta, calibrate=opts.calibrate, refit=opts.refit, combine=c.combine)
    flags = {name: True for name in ("refit", "calibrate", "tta") if getattr(probe, name)}
    combine = {"combine": c.combine} if c.combine != "concat" else {}
    result.reproduce = Step.of("fit_head", store=result.store, backbones=list(c.keys), head=c.head, **c.param_dict,
                               seed=opts.seed, **flags, **combine, out=result.out or "RUN_DIR")
    result.command = word_step(result.reproduce)
    data = load_training_data(result.store, list(c.keys), opts.seed, opts.memory_limit)
    try:
        fitted = fit_on_data(data, make_head(c.head, c.param_dict, seed=opts.seed), None, progress=False,
                             evaluate_test=True, probe=probe)
        if result.out is not None:
            result.run_dir = str(write_run(fitted, data, result.out, adopt=FILES))
    finally:
        data.close()
    result.test = fitted.test.to_dict() if fitted.test else None
    result.validation = fitted.val.to_dict() if fitted.val else None
    return result


def _record(path, folder, opts: AutoOptions, pool: FoldPool, board, skipped, stopped, resumed,
            result: AutoResult | None = None) -> dict:
    """What leaderboard.json holds (and the JSON a caller prints): written after every candidate."""
    entries, sel = _ranked(board, opts, pool.plan.test_over_train) if board else ([], None)
    rows = []
    for i, e in enumerate(entries):
        t = sel.vs_best[i]
        rows.append({"rank": i + 1, **e.to_dict(), "tied": sel.tied[i], "winner": i == sel.winner,
                     "vs_best_p": None if t is None else t.p_value})
    winner = None
    if sel is not None:
        w = entries[sel.winner]
        winner = {"label": w.candidate.label, **w.candidate.record(), "cv": w.score.intervals[opts.metric].to_dict(),
                  "cv_all": {m: i.to_dict() for m, i in w.score.intervals.items()},
                  "best_label": entries[sel.best].candidate.label,
                  "best_cv": entries[sel.best].score.intervals[opts.metric].to_dict(),
                  "selection_adjusted": None if sel.adjusted is None else sel.adjusted.to_dict(),
                  "tied": sum(sel.tied)}
        if result is not None:
            winner |= {"test": result.test, "validation": result.validation, "run_dir": result.run_dir,
                       "command": result.command,
                       "reproduce": None if result.reproduce is None else {
                           "operation": result.reproduce.operation, "params": dict(result.reproduce.params)}}
    return {"store": path, "out": str(folder) if folder else None, "metric": opts.metric, "folds": pool.plan.folds,
            "seed": opts.seed, "images": len(pool.paths), "grouped_folds": pool.plan.grouped, "note": pool.plan.note,
            "interval": f"95% {METHOD}", "selection": {"rule": RULE, "prefer": opts.prefer, "adjusted": ADJUSTED,
                                                        **(sel.to_dict() if sel else {})},
            "budget": opts.budget.to_dict(), "stopped": stopped, "finished": result is not None,
            "resumed": resumed, "candidates": len(entries), "skipped": skipped,
            "probe": {"refit": opts.refit, "calibrate": opts.calibrate},
            "seconds": None if result is None else result.seconds,
            "winner": winner, "board": rows}


__all__ = ["AutoOptions", "AutoResult", "auto"]
