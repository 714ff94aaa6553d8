"""Train: heads on cached features. fit (one head -> a run folder), sweep (a grid of one head),
compare (every backbone configuration x heads), with metrics and the run-folder record."""
