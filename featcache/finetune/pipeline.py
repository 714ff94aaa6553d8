"""fine_tune(): a fit-head run folder -> a fine-tuned run folder (linear probe first, then fine-tuning)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ParameterError
from ..train.fit import prepare_run_dir
from ..train.run import abandon_run, load_run
from .data import BatchReader, load_image_set
from .network import build_network
from .options import FineTuneOptions
from .output import FineTuneResult, write_fine_tuned_run
from .trainer import train


def fine_tune(run: str | Path, out: str | Path, data: str | Path | None = None,
              options: FineTuneOptions | None = None, **settings) -> FineTuneResult:
    """Start from the trained head of ``run`` (a fit-head run folder on one backbone), train the
    top blocks of its backbone with the head end to end on the store's images under ``data``
    (default: where the store was extracted from), and write the run folder ``out``: export and
    predict use it as any run folder, and `extract --weights OUT` computes features with its
    backbone. ``options`` (or its fields as keyword arguments: ``unfreeze=2, epochs=5``) say how."""
    options = options or FineTuneOptions(**settings)
    source = load_run(run)
    if len(source.config.features) != 1:
        raise ParameterError("run", f"{source.path} concatenates {len(source.config.features)} backbones; fine-tune "
                                    "takes a run on one backbone")
    out_dir = Path(out).expanduser().resolve()
    if out_dir == source.path:
        raise ParameterError("out", f"{out_dir} is the run fine-tuning starts from; give a new folder")
    feature = source.config.features[0]
    if feature.backbone.tap:  # its network would end at the tap and its backbone file fit no full network
        b = feature.backbone
        raise ParameterError("run", f"{source.path} was fitted on the tapped features {b.label}; fine-tune takes a "
                                    f"run on a backbone's final features (a head fitted on {b.name})")
    images = load_image_set(source.config, data)
    if not len(images.train):
        raise ParameterError("run", f"store {source.config.store_path} has no training images to fine-tune on")
    out_dir = prepare_run_dir(out_dir)  # written beside ``out``, put in place when complete
    try:
        network = build_network(feature, source.head, options.unfreeze, options.seed)
        reader = BatchReader(feature.backbone.input_size, feature.backbone.preprocess, feature.augment,
                             options.threads)
        try:
            training = train(network, images, reader, options)
        finally:
            reader.close()
        return write_fine_tuned_run(out_dir, source, network, images, training, options)
    except BaseException:
        abandon_run(out_dir)  # ``out`` stays as it was
        raise
