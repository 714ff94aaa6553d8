"""The `featcache` command: a thin click layer. Each command parses options and calls one library
function; TensorFlow is imported only inside commands, so `--help` stays instant.

Exit codes: 0 success, 1 finished but some inputs failed (e.g. unreadable images in predict),
2 user error (bad option, missing or damaged file, wrong store, a refused system call), 70 a featcache
bug (its traceback is printed), 130 interrupted (extract keeps the units it saved, and says how many images). Every failure is one
``error: ...`` line on stderr; with --json also {"error", "remedy", "exit_code"} on stdout.
"""

from __future__ import annotations

import os
import sys

import click

from .. import __version__
from .common import FeatcacheGroup

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter is not for users


@click.group(cls=FeatcacheGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="featcache")
def cli():
    """Cache frozen-backbone image features once; train heads on them in seconds.

    \b
    Typical session:
      featcache extract DATA_DIR --store feats.zarr -b efficientnet_lite0 --augment 4
      featcache fit-head feats.zarr -b efficientnet_lite0 --head mlp --out runs/r1
      featcache predict runs/r1 new_images/
    """


def _register() -> None:
    from . import (
        audit_cmd,
        auto_cmd,
        backbones_cmd,
        classify_cmd,
        compare_cmd,
        data_cmd,
        export_cmd,
        export_features_cmd,
        extract_cmd,
        fine_tune_cmd,
        fit_head_cmd,
        heads_cmd,
        info_cmd,
        neighbors_cmd,
        predict_cmd,
        rm_cmd,
        sweep_cmd,
        verify_cmd,
    )

    for module in (audit_cmd, auto_cmd, backbones_cmd, classify_cmd, compare_cmd, data_cmd, export_cmd,
                   export_features_cmd, extract_cmd, fine_tune_cmd, fit_head_cmd, heads_cmd, info_cmd, neighbors_cmd,
                   predict_cmd, rm_cmd, sweep_cmd, verify_cmd):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    sys.exit(cli.main(standalone_mode=True))
