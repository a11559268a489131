"""One process of a data-parallel test run: trains the tiny model, saves its final weights.

    python distributed_worker.py NPZ ARCH RUNS_DIR WEIGHTS_PREFIX BATCH

It joins the processes the `CNNLAB_*` variables name (as `cnnlab.training.distributed.launch` sets
them), or trains alone without them. Run with KERAS_BACKEND=jax. The final weights go to
WEIGHTS_PREFIX<process>.npz, written by this script: cnnlab's process 0 alone writes the run
folder, so this is how a test sees what the other processes ended with.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from synthetic import make_tiny_config

from cnnlab.training.distributed import cluster_from
from cnnlab.training.trainer import train


def main(argv: list[str]) -> None:
    npz, arch, runs_dir, prefix, batch = argv
    cluster = cluster_from()
    config = make_tiny_config(
        Path(runs_dir), Path(npz), Path(arch), epochs=2, batch_size=int(batch), precision="float32"
    )
    final: list[np.ndarray] = []

    import keras

    class KeepFinal(keras.callbacks.Callback):
        def on_train_end(self, logs: object = None) -> None:
            final.extend(np.asarray(w) for w in self.model.get_weights())

    train(config, cluster=cluster, callbacks=[KeepFinal()])
    index = 0 if cluster is None else cluster.process_id
    np.savez(f"{prefix}{index}.npz", *final)


if __name__ == "__main__":
    main(sys.argv[1:])
