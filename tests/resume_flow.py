"""A seeded run killed three times resumes exactly, on the Keras backend named by $KERAS_BACKEND.

Run by tests/test_backends.py in a fresh process per backend (Keras reads KERAS_BACKEND once,
at import): `python tests/resume_flow.py WORK_DIR`. Trains the tiny model once uninterrupted,
then again under `test_fault_injection.KILLER` (SIGKILL in the middle of an epoch, while the
training state is being renamed into place, and in the middle of a later epoch), then runs the
same config to the end; prints one JSON line comparing the two.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from synthetic import TINY_ARCH, make_tiny_config, write_tiny_npz

sys.path.insert(0, str(Path(__file__).parent / "training"))  # the fault-injection tests' home
from test_fault_injection import KILLER, _metrics

from cnnlab.training.trainer import train

SETTINGS = {"epochs": 4, "patience": 2, "monitor": "val_loss", "lr_decay": 0.7, "batch_size": 16}
KILLS = [("mid-epoch", 1, 5), ("state", 2, 0), ("mid-epoch", 3, 3)]


def main(work: Path) -> dict[str, object]:
    npz, arch = work / "tiny.npz", work / "tiny.toml"
    write_tiny_npz(npz, np.random.default_rng(0), train_per_class=60, test_per_class=20)
    arch.write_text(TINY_ARCH)
    reference = train(make_tiny_config(work / "reference", npz, arch, **SETTINGS))

    config = make_tiny_config(work / "killed", npz, arch, **SETTINGS)
    config_file, killer = work / "run.toml", work / "killer.py"
    config_file.write_text(config.to_toml())
    killer.write_text(textwrap.dedent(KILLER))
    codes = []
    for where, epoch, batch in KILLS:
        done = subprocess.run(
            [sys.executable, str(killer), str(config_file), where, str(epoch), str(batch)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode not in (0, -9):
            sys.exit(f"{where} {epoch} {batch} failed ({done.returncode}): {done.stderr[-2000:]}")
        codes.append(done.returncode)
    resumed = train(config)
    pairs = zip(resumed.model.get_weights(), reference.model.get_weights(), strict=True)
    return {
        "backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "kill_codes": codes,
        "finished": resumed.state.finished,
        "same_history": _metrics(resumed.history) == _metrics(reference.history),
        "epochs": len(resumed.history),
        "same_best_epoch": resumed.state.best_epoch == reference.state.best_epoch,
        "same_weights": all(np.array_equal(mine, theirs) for mine, theirs in pairs),
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
