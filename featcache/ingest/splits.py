"""The three splits, and the names a folder or a label table may give them."""

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"train": 0, "training": 0, "validation": 1, "val": 1, "valid": 1, "test": 2, "testing": 2}
