"""Data-parallel training over several processes and devices, on JAX's distributed runtime.

Nothing here trains: `cnnlab.train` does, the same code path for one process or many. This
module says where a process stands among those training one model (`Processes`), joins them
(`join`), and launches a team on this machine (`launch`). `Processes` is the one object
training asks about distribution, through a few hooks that do nothing for one process on one
device: open the run folder (`open_run`), agree on what to train (`agree`), distribute the
model (`distribute`), shard the data (`shard`), choose each process's callbacks
(`choose_callbacks`), and `finish`.

- `jax.distributed.initialize` connects the processes (CPU collectives over gloo);
- `keras.distribution.DataParallel` replicates the model on every device and splits each batch
  across them, so gradients are averaged over the whole global batch;
- every process computes the same shuffled order and feeds its own slice of every global batch
  (`Processes.shard`): together the slices are exactly the batch one process would train on;
- process 0 alone writes the run folder (and alone decides what to train); the others get a
  read-only `Run` and write nothing.

A cluster is named by flags (`--coordinator HOST:PORT --num-processes N --process-id I`), by
the environment variables `CNNLAB_COORDINATOR`, `CNNLAB_NUM_PROCESSES`, `CNNLAB_PROCESS_ID`, or
by a launcher JAX detects itself (Slurm's `srun`, Open MPI's `mpirun`). JAX's own
`JAX_COORDINATOR_ADDRESS` stands for `CNNLAB_COORDINATOR`. Only the JAX backend can do this
(`--backend jax`, `train.backend = "jax"` or `KERAS_BACKEND=jax`).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from cnnlab._backend import backend_name, requested_backend
from cnnlab.errors import CnnlabError, RunError
from cnnlab.runs import Run

log = logging.getLogger(__name__)
T = TypeVar("T")

ENV_COORDINATOR = "CNNLAB_COORDINATOR"
ENV_NUM_PROCESSES = "CNNLAB_NUM_PROCESSES"
ENV_PROCESS_ID = "CNNLAB_PROCESS_ID"
JAX_COORDINATOR = "JAX_COORDINATOR_ADDRESS"  # JAX's own name, also accepted
LOOPBACK = "127.0.0.1"
STRAGGLER_SECONDS = 300.0
"""How long `launch` lets processes run on after one has finished (process 0 writes the run
folder after the others are done: seconds, not minutes)."""
# Launchers whose environment JAX reads by itself: (variable that says how many processes, name).
_LAUNCHERS = (("SLURM_NTASKS", "Slurm"), ("OMPI_COMM_WORLD_SIZE", "Open MPI"))


@dataclass(frozen=True)
class Cluster:
    """How to join the processes that train one model, and how many local devices to use.

    `coordinator` is process 0's HOST:PORT; None (with the counts None too) lets JAX read them
    from a launcher's environment. `devices` is the number of local devices (GPUs, or CPU
    devices made by XLA) each process trains on; 0 means every local device (one on a CPU).
    A coordinator on 127.0.0.1 (or localhost) listens there only (processes from `launch`).
    """

    coordinator: str | None = None
    num_processes: int | None = 1
    process_id: int | None = 0
    devices: int = 0

    @property
    def loopback(self) -> bool:
        host = (self.coordinator or "").rpartition(":")[0]
        return host in (LOOPBACK, "localhost")

    @property
    def multi_process(self) -> bool:
        return self.num_processes is None or self.num_processes > 1


@dataclass(frozen=True)
class Processes:
    """Where this process stands (its index, how many processes, how many devices in all),
    and the hooks through which training is distributed; `ONE_PROCESS`, one process on one
    device, is the default, for which every hook does nothing."""

    index: int = 0
    count: int = 1
    device_names: tuple[str, ...] = ()  # Keras' names of every device in the team

    @property
    def devices(self) -> int:
        return max(1, len(self.device_names))

    @property
    def writes(self) -> bool:
        """Whether this process writes the run folder (process 0 only)."""
        return self.index == 0

    @property
    def parallel(self) -> bool:
        return self.count > 1 or self.devices > 1

    def open_run(self, directory: str | Path) -> Run:
        """The run folder as this process sees it: process 0 reads and writes it; the others
        get it read-only (their writes do nothing)."""
        return Run(directory, read_only=not self.writes)

    def agree(
        self,
        decide: Callable[[], T | None],
        *,
        encode: Callable[[T], str],
        decode: Callable[[str], T],
    ) -> T | None:
        """Process 0's `decide()` (a value, or None), given to every process; alone, simply
        `decide()`. Between processes the value travels as `encode`'s text, read back with
        `decode`; a CnnlabError raised by `decide` is raised on every process (so that none
        waits for the others forever)."""
        if self.count == 1:
            return decide()
        message = ""
        if self.writes:
            try:
                value = decide()
                message = "none:" if value is None else "value:" + encode(value)
            except CnnlabError as exc:
                message = "error:" + str(exc)
        kind, _, text = _broadcast_text(message).partition(":")
        if kind == "error":
            raise RunError(text if self.writes else f"process 0 stopped: {text}")
        return None if kind == "none" else decode(text)

    def distribute(self, batch_size: int) -> None:
        """Make Keras replicate the next model on every device and split each global batch of
        `batch_size` images evenly over them (a CnnlabError if it cannot be)."""
        if self.parallel:
            self.check_batch_size(batch_size)
            keras = _keras()
            keras.distribution.set_distribution(
                keras.distribution.DataParallel(
                    devices=list(self.device_names), auto_shard_dataset=False
                )
            )

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.devices:
            raise CnnlabError(
                f"--batch-size {batch_size} does not split evenly over {self.devices} devices "
                f"({self.count} processes); choose a multiple of {self.devices}"
            )

    def shard(self, dataset: Any) -> Any:
        """This process's slice of every batch of `dataset` (a `keras.utils.PyDataset` of
        global batches); a last batch that does not split evenly loses at most
        `devices - 1` images. One process on one device (or no dataset): `dataset` itself.

        A dataset that can decode only its part (an image folder's stream: `take_part`) is told
        to, so each process reads its own pictures; arrays in memory are sliced here."""
        if dataset is None or not self.parallel:
            return dataset
        take_part = getattr(dataset, "take_part", None)
        if callable(take_part):
            take_part(self.index, self.count, self.devices)
            return dataset
        return _sharded(dataset, self)

    def choose_callbacks(self, callbacks: Sequence[Any]) -> list[Any]:
        """The callbacks this process runs: all on process 0; on the others, those that only
        steer training (every process must take the same decisions), none that writes."""
        if self.count == 1:
            return list(callbacks)
        from cnnlab.training.callbacks import BestModelCheckpoint, MlflowLog, TrainingState

        keras_writers = (_keras().callbacks.CSVLogger, _keras().callbacks.TensorBoard)
        writers = (BestModelCheckpoint, TrainingState, MlflowLog, *keras_writers)
        if not self.writes:
            return [callback for callback in callbacks if not isinstance(callback, writers)]
        # Saving a model makes Keras create variables (a throwaway optimizer's); under the
        # distribution each one would wait for the other processes, which do not save.
        return [_undistributed(c) if isinstance(c, writers) else c for c in callbacks]

    def describe(self) -> dict[str, int]:
        """What run.json records about the team (empty for one process on one device)."""
        return {"processes": self.count, "devices": self.devices} if self.parallel else {}

    def finish(self) -> None:
        """Undo `distribute`, so that later work in this process runs on one device."""
        if self.parallel:
            _keras().distribution.set_distribution(None)


ONE_PROCESS = Processes()


def cluster_from(
    *,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    devices: int = 0,
    environ: Mapping[str, str] | None = None,
) -> Cluster | None:
    """The cluster the flags or the environment name, or None to train in one process on one
    device. Flags win over `CNNLAB_*` variables (and `JAX_COORDINATOR_ADDRESS`), which win over
    a launcher's own."""
    env = os.environ if environ is None else environ
    coordinator = coordinator or env.get(ENV_COORDINATOR) or env.get(JAX_COORDINATOR) or None
    num_processes = num_processes or _env_int(env, ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(env, ENV_PROCESS_ID)
    if devices < 0:
        raise CnnlabError(f"--devices must be >= 1, got {devices}")
    named = (coordinator, num_processes, process_id)
    if all(value is None for value in named):
        launcher = _launcher(env)
        if launcher is not None:
            log.info("joining the processes %s started (JAX reads its environment)", launcher)
            return Cluster(None, None, None, devices=devices)
        return Cluster(devices=devices) if devices > 1 else None
    if any(value is None for value in named):
        raise CnnlabError(
            "joining a cluster needs --coordinator HOST:PORT, --num-processes N and "
            f"--process-id I (or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID})"
        )
    assert num_processes is not None and process_id is not None and coordinator is not None
    _check_address(coordinator)
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise CnnlabError(
            f"--process-id must be in [0, {num_processes}) and --num-processes >= 1, got "
            f"process {process_id} of {num_processes}"
        )
    return Cluster(coordinator, num_processes, process_id, devices=devices)


def join(cluster: Cluster | None) -> Processes:
    """Join `cluster` (None: one process, nothing to do) before anything runs on JAX; the model
    is then built under `Processes.distribute`, and `Processes.finish` ends it."""
    if cluster is None:
        return ONE_PROCESS
    require_jax_backend()
    if cluster.devices > 1:
        _ask_xla_for_cpu_devices(cluster.devices)
    import jax

    if cluster.multi_process and not jax.distributed.is_initialized():
        # CPUs exchange gradients over gloo (TCP); GPUs use NCCL whatever this says.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=cluster.coordinator,
            num_processes=cluster.num_processes,
            process_id=cluster.process_id,
            coordinator_bind_address=cluster.coordinator if cluster.loopback else None,
        )
    devices = _team_devices(cluster.devices)
    processes = Processes(jax.process_index(), jax.process_count(), tuple(devices))
    log.info(
        "data-parallel: process %d of %d, %d devices in all (%s)",
        processes.index,
        processes.count,
        processes.devices,
        ", ".join(devices[:8]) + (" ..." if len(devices) > 8 else ""),
    )
    return processes


def require_jax_backend(backend: str | None = None) -> None:
    """One clear line unless Keras runs on JAX here (or `backend` names JAX)."""
    if backend is None:
        backend = backend_name()
    if backend != "jax":
        raise CnnlabError(
            f"data-parallel training (--processes, --coordinator, --devices) runs on JAX's "
            f"distributed runtime; this is the {backend} backend: add --backend jax (or set "
            "KERAS_BACKEND=jax; pip install jax)"
        )


def launch(
    argv: Sequence[str],
    processes: int,
    *,
    backend: str = "auto",
    program: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    straggler_seconds: float = STRAGGLER_SECONDS,
) -> int:
    """Run `cnnlab ARGV` (a `train` command; or `program ARGV`) as `processes` processes on
    this machine, joined over 127.0.0.1 by the `CNNLAB_*` variables; return the first non-zero
    exit code, or 0. If one process fails, the others are stopped.

    The processes train in step, so they finish together, process 0 a little later (it writes
    the run folder). One still running `straggler_seconds` after another has finished is
    waiting for a partner that is gone (a collective that will never complete): all are
    stopped, with one line that says so, and the exit code is 1, instead of waiting forever.

    Process 0's output is shown; the others' progress is not (their warnings and errors are).
    `env`: the processes' environment (default: this one's). `backend`: the Keras backend the
    processes run on, set as their KERAS_BACKEND ("auto": the one `env` names).
    """
    if processes < 1:
        raise CnnlabError(f"--processes must be >= 1, got {processes}")
    base = dict(os.environ if env is None else env)
    if backend != "auto":
        base["KERAS_BACKEND"] = backend
    require_jax_backend(requested_backend(base))
    address = f"{LOOPBACK}:{free_port()}"
    children = []
    for index in range(processes):
        child_env = {
            **base,
            ENV_COORDINATOR: address,
            ENV_NUM_PROCESSES: str(processes),
            ENV_PROCESS_ID: str(index),
        }
        command = [*(program or (sys.executable, "-m", "cnnlab")), *argv]
        quiet = subprocess.DEVNULL if index else None
        children.append(subprocess.Popen(command, env=child_env, stdout=quiet))
    return _wait_all(children, straggler_seconds)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


# --- Helpers -----------------------------------------------------------------------------------


def _keras() -> Any:
    from cnnlab._backend import keras

    return keras()


def _undistributed(callback: Any) -> Any:
    """`callback`, its hooks run with no Keras distribution set (only this process runs them)."""
    keras = _keras()
    hooks = [name for name in dir(keras.callbacks.Callback) if name.startswith("on_")]

    class _Alone(keras.callbacks.Callback):  # type: ignore[name-defined]
        def set_model(self, model: Any) -> None:
            super().set_model(model)
            callback.set_model(model)

        def set_params(self, params: Any) -> None:
            super().set_params(params)
            callback.set_params(params)

    def alone(name: str) -> Callable[..., None]:
        def hook(self: Any, *args: Any, **kwargs: Any) -> None:
            current = keras.distribution.distribution()
            keras.distribution.set_distribution(None)
            try:
                getattr(callback, name)(*args, **kwargs)
            finally:
                keras.distribution.set_distribution(current)

        return hook

    for name in hooks:
        setattr(_Alone, name, alone(name))
    return _Alone()


def _wait_all(children: list[subprocess.Popen[bytes]], straggler_seconds: float) -> int:
    first_done: float | None = None
    try:
        while True:
            codes = [child.poll() for child in children]
            failed = [code for code in codes if code not in (None, 0)]
            if failed or all(code == 0 for code in codes):
                break
            if first_done is None and 0 in codes:
                first_done = time.monotonic()
            if first_done is not None and time.monotonic() - first_done > straggler_seconds:
                waiting = [str(i) for i, code in enumerate(codes) if code is None]
                log.error(
                    "process %s still running %.0f s after process %d finished: it is waiting "
                    "for a partner that has gone; stopped all (train again with --overwrite: "
                    "several processes do not resume a run)",
                    ", ".join(waiting),
                    straggler_seconds,
                    codes.index(0),
                )
                failed = [1]
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        failed = [130]
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
    return failed[0] if failed else 0


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise CnnlabError(f"${name} must be a whole number, got {value!r}") from None


def _launcher(env: Mapping[str, str]) -> str | None:
    for variable, name in _LAUNCHERS:
        count = env.get(variable, "")
        if count.isdigit() and int(count) > 1:
            return name
    return None


def _check_address(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CnnlabError(f"--coordinator must look like HOST:PORT, got {address!r}")


def _ask_xla_for_cpu_devices(count: int) -> None:
    """Let a CPU-only machine show `count` devices (a GPU machine shows its GPUs anyway)."""
    flag = f"--xla_force_host_platform_device_count={count}"
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()


def _team_devices(per_process: int) -> list[str]:
    """Every process's first `per_process` local devices (0: all of them), as Keras names."""
    import jax

    chosen = []
    for index in range(jax.process_count()):
        mine = [d for d in jax.devices() if d.process_index == index]
        if per_process > len(mine):
            raise CnnlabError(
                f"--devices {per_process}: process {index} has only {len(mine)} "
                f"{mine[0].platform.upper()} device(s)"
            )
        chosen += mine[:per_process] if per_process else mine
    return [f"{device.platform}:{device.id}" for device in chosen]


def _broadcast_text(text: str) -> str:
    """Process 0's `text`, on every process (two collectives: the length, then the bytes)."""
    from jax.experimental import multihost_utils

    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    size = int(multihost_utils.broadcast_one_to_all(np.int32(len(data))))
    padded = np.zeros(size, dtype=np.uint8)
    padded[: min(size, len(data))] = data[:size]
    received = np.asarray(multihost_utils.broadcast_one_to_all(padded))
    return bytes(received.astype(np.uint8)).decode("utf-8")


def _sharded(dataset: Any, processes: Processes) -> Any:
    """`dataset`'s batches, cut to a multiple of the device count, this process's slice."""
    keras = _keras()
    devices, count, index = processes.devices, processes.count, processes.index

    class _Shard(keras.utils.PyDataset):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()

        def __len__(self) -> int:
            return batches

        def __getitem__(self, position: int) -> tuple[np.ndarray, ...]:
            batch = dataset[position]
            usable = len(batch[0]) - len(batch[0]) % devices
            per_process = usable // count
            start = index * per_process
            return tuple(part[start : start + per_process] for part in batch)

        def on_epoch_end(self) -> None:
            dataset.on_epoch_end()

    batches = len(dataset)
    if batches and len(dataset[batches - 1][0]) < devices:
        batches -= 1  # a last batch smaller than the device count is left out
    return _Shard()
