"""`featcache rm`."""

from __future__ import annotations

import click

from .common import command, emit_json
from .options import backbone_option, json_option, store_argument


@command("rm", flag_aliases={"key": "backbone"})
@store_argument
@backbone_option("the feature key to remove, in full, as `featcache info` lists it.", required=True)
@json_option
def rm_cmd(store, backbone, as_json):
    """Remove one feature configuration (its features and record) from STORE.

    The image list and every other configuration stay as they are; runs trained on the removed
    features keep working (they carry what they need), but cannot be re-fitted from STORE. Use it
    for a configuration a failed or unwanted extract left behind. Refused while another process
    writes STORE.
    """
    from ..stores import remove_config

    key = backbone
    status = remove_config(store, key)
    done = None if status is None else {"done": status.done, "images": status.rows}
    if as_json:
        emit_json({"store": store, "removed": key, **(done or {})})
        return
    what = f" ({done['done']}/{done['images']} images extracted)" if done else ""
    click.echo(f"removed {key}{what} from {store}")


COMMANDS = [rm_cmd]
