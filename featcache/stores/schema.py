"""The store's on-disk vocabulary: schema version, row status codes, array names."""

from __future__ import annotations

SCHEMA_VERSION = 2  # 2: versioned manifests, per-row checksums, recorded batch size. Schema 1 is read too.
READABLE_SCHEMAS = (1, 2)

PENDING, DONE, FAILED = 0, 1, 2

# the arrays of one feature config, under features/<key>/
FEATURES, STATUS, CHECKSUM, DIGEST = "features", "status", "checksum", "digest"
CONFIG_ARRAYS = (FEATURES, STATUS, CHECKSUM, DIGEST)
# the arrays of one manifest version, under manifests/<n>/ (schema 1: under images/)
MANIFEST_ARRAYS = ("path", "digest", "label", "split")
# the group where each shard of a sharded run (--shard I/N) keeps its own record until the next full run
SHARDS = "shards"
