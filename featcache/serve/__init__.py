"""Serve: export a trained run as one end-to-end Keras model, predict image files with it, and
classify photos with a backbone's own ImageNet classifier."""
