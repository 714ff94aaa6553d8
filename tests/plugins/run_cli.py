"""Run several featcache commands in ONE fresh process (one TensorFlow import instead of one per
command) and print each one's exit code and output as JSON. Used by tests/test_plugins.py:

    python run_cli.py '[["extract", "data", "--store", "s.zarr"], ["info", "s.zarr"]]'
"""

import json
import sys

from click.testing import CliRunner

from featcache.cli import cli

results = []
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(cli, args)
    results.append({"args": args, "exit_code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr})
print(json.dumps(results))
