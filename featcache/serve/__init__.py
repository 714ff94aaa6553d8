"""Serve: export a trained run as one end-to-end model (a plain .keras file, a SavedModel or a
TFLite model: ``formats/``), predict image files with a run or any exported model, and classify
photos with a backbone's own ImageNet classifier."""
