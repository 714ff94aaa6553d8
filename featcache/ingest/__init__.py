"""Ingest: scan a class-per-folder tree into a Manifest, decode image files, make augmented views."""
