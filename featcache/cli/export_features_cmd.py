"""`featcache export-features`."""

from __future__ import annotations

import click

from .common import command, emit_json
from .options import KEY_NOTE, backbones_option, json_option, out_option, quiet_option, store_argument


@command("export-features", flag_aliases={"format": "fmt", "backbones": "backbones"})
@store_argument
@backbones_option(KEY_NOTE, required=True)
@out_option("Folder to write (replaced in one step): parquet part files or features.npy, plus _featcache.json.",
            required=True)
@click.option("--format", "fmt", type=click.Choice(["parquet", "npy"]), default="parquet", show_default=True,
              help="parquet: part-NNNNN.parquet files, one row per image and view; npy: features.npy + "
                   "metadata.csv.")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default=None,
              help="Features' type  [default: as stored; float16 stays float16]")
@click.option("--views", type=click.Choice(["0", "all"]), default="0", show_default=True,
              help="View 0 (the un-augmented image) or every stored view.")
@click.option("--rows-per-part", type=click.IntRange(1), default=None,
              help="parquet: most rows per part file  [default: 65536]")
@quiet_option
@json_option
def export_features_cmd(store, backbones, out, fmt, dtype, views, rows_per_part, quiet, as_json):
    """Write STORE's features with each image's path, digest, label, class, split (and group) to
    OUT, for pyarrow, DuckDB, pandas or faiss: no featcache needed to read them.

    \b
    Read them back, e.g.:
      duckdb -c "SELECT path, class, features FROM 'OUT/*.parquet' WHERE split = 'train'"
      pyarrow.parquet.read_table("OUT")
    """
    from ..serve.features_out import DEFAULT_ROWS_PER_PART, FeatureExportOptions, export_features

    options = FeatureExportOptions(format=fmt, dtype=dtype, all_views=views == "all",
                                   rows_per_part=rows_per_part or DEFAULT_ROWS_PER_PART)
    result = export_features(store, list(backbones), out, options, progress=not (quiet or as_json))
    if as_json:
        emit_json(result.to_dict())
        return
    click.echo(f"wrote {result.rows} rows ({result.images} images x {result.views} view(s), {result.dim} "
               f"{result.dtype} features) of {', '.join(result.keys)} to {result.path} "
               f"({len(result.files)} file(s) + _featcache.json)")


COMMANDS = [export_features_cmd]
