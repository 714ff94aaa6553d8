"""TensorBoard scalars without the `tensorboard` package.

Keras' TensorBoard callback (and tf.summary.scalar) need the tensorboard pip package, which
TensorFlow no longer installs. tf.summary.write with the "scalars" plugin metadata writes the very
same event records, so logs are always written; view them wherever tensorboard is installed.
Layout as Keras': ``<dir>/train`` and ``<dir>/validation`` with ``epoch_<metric>`` tags.
"""

from __future__ import annotations

from pathlib import Path


class ScalarWriter:
    def __init__(self, log_dir: str | Path):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        self._tf = tf
        self._meta = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
        self._root = Path(log_dir)
        self._writers: dict[str, object] = {}

    def scalar(self, run: str, tag: str, value: float, step: int) -> None:
        tf = self._tf
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(str(self._root / run))
        with self._writers[run].as_default():
            tf.summary.write(tag, tf.constant(float(value), tf.float32), step=int(step), metadata=self._meta)

    def close(self) -> None:
        for w in self._writers.values():
            w.close()


def epoch_logs_callback(log_dir: str | Path):
    """A Keras callback writing every epoch's logs: ``val_x`` to validation/epoch_x, others to train/."""
    import keras

    class EpochScalars(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.writer = ScalarWriter(log_dir)

        def on_epoch_end(self, epoch, logs=None):
            for k, v in (logs or {}).items():
                run, name = ("validation", k[4:]) if k.startswith("val_") else ("train", k)
                self.writer.scalar(run, f"epoch_{name}", v, epoch)

        def on_train_end(self, logs=None):
            self.writer.close()

    return EpochScalars()
