"""The learning-rate range test: which learning rate to train at, found in a short run.

Smith's test (Smith 2015, "Cyclical learning rates for training neural networks"; Smith 2017),
as fastai's `lr_find` and Lightning's `Tuner.lr_find` run it: train the configured model on the
configured data for a few steps, the learning rate rising exponentially from `start_lr` to
`end_lr` (one rate a step), and record the loss of every step. The loss is smoothed with an
exponential moving average (beta 0.98, debiased, as fastai does) and the test stops early when
the smoothed loss exceeds 4 times its minimum so far (the loss diverged).

The suggestion is the rate at the smoothed loss's minimum divided by 10 (fastai's
`minimum`, Smith's "an order of magnitude below where the loss stops falling"): the minimum of
a smoothed curve barely moves between runs, where its steepest slope (fastai's `steep`,
Lightning's rule) is a derivative of a noisy curve of 100 points and jumps; at the minimum the
loss is already on the edge of rising (and the moving average lags the loss, so the turn came
a little earlier), hence the factor 10 of margin. Measured against the recipes' tuned rates
(docs/training.md, "Find a learning rate"), it came out too high for both models tried: a
starting point for a model nobody has tuned, not a replacement for a recipe's rate.

Nothing is written: no run folder, and the model's variables (and its optimizer's) are put
back as they were, bit for bit.

    result = lr_find(load_config(overrides={"data.dataset": "mnist"}), steps=100)
    print(result.suggestion)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cnnlab._backend import keras as _keras
from cnnlab.config import Config, load_config
from cnnlab.errors import ConfigError
from cnnlab.training.callbacks import KerasCallback

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

BETA = 0.98
"""The exponential moving average's weight of the past (fastai's)."""
DIVERGE = 4.0
"""The test stops when the smoothed loss exceeds this many times its minimum (fastai's)."""
MARGIN = 10.0
"""The suggestion is the rate at the smoothed loss's minimum divided by this."""


@dataclass(frozen=True)
class LrFindResult:
    """What the range test measured: one entry a step it ran, and the rate it suggests.

    `losses` are each step's training loss, `smoothed` their debiased moving average;
    `stopped_early` says the test ended before its last rate because the loss diverged (its
    last entry is the step that diverged).
    """

    rates: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    stopped_early: bool

    @property
    def minimum_rate(self) -> float:
        """The rate at which the smoothed loss was lowest (the suggestion is this / 10)."""
        return self.rates[_minimum_index(self.smoothed)]


def exponential_rates(start_lr: float, end_lr: float, steps: int) -> list[float]:
    """`steps` learning rates rising exponentially from `start_lr` to `end_lr`, both included."""
    if steps < 2:
        raise ConfigError(f"--steps must be at least 2, got {steps}")
    if not 0 < start_lr < end_lr:
        raise ConfigError(
            f"the learning rates must rise from a positive --start-lr: got {start_lr:g} to "
            f"{end_lr:g}"
        )
    ratio = end_lr / start_lr
    return [start_lr * ratio ** (i / (steps - 1)) for i in range(steps)]


class LrFinder(KerasCallback):
    """Set the optimizer's learning rate before every training step to the next of `rates`,
    record each step's loss and its smoothed value, and stop training after the last rate or
    as soon as the smoothed loss exceeds `diverge` times its minimum (or is not finite).

    The model must be compiled with `steps_per_execution=1` (one callback call a step).

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> finder = LrFinder([1e-4, 1e-3, 1e-2])
    >>> _ = model.fit(np.ones((8, 1)), np.ones(8), batch_size=2, epochs=5, callbacks=[finder],
    ...               verbose=0)
    >>> len(finder.losses)
    3
    """

    def __init__(self, rates: Sequence[float], *, beta: float = BETA, diverge: float = DIVERGE):
        super().__init__()
        self.rates = list(rates)
        self.beta = beta
        self.diverge = diverge
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.stopped_early = False
        self._average = 0.0

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        model = self.model
        # JAX holds the variables aside during an epoch; bring them back so that the two
        # changes below reach the next step (Keras' documented way for a callback).
        sync = getattr(model, "jax_state_sync", None)
        if callable(sync):
            sync()
        model.reset_metrics()  # so the logged loss is this step's, not the epoch's mean
        model.optimizer.learning_rate = self.rates[len(self.losses)]

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = float((logs or {}).get("loss", math.nan))
        step = len(self.losses) + 1
        self._average = self.beta * self._average + (1 - self.beta) * loss
        smooth = self._average / (1 - self.beta**step)  # debiased: the first steps start at 0
        self.losses.append(loss)
        self.smoothed.append(smooth)
        best = min(self.smoothed)
        if not math.isfinite(smooth) or smooth > self.diverge * best:
            self.stopped_early = True
            log.info(
                "the loss diverged at learning rate %.3g (smoothed %.4g > %g x its minimum "
                "%.4g): stopping",
                self.rates[step - 1],
                smooth,
                self.diverge,
                best,
            )
        if self.stopped_early or step == len(self.rates):
            model = self.model
            model.stop_training = True


def lr_find(
    config: Config | None = None,
    *,
    steps: int = 100,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
) -> LrFindResult:
    """Run the learning-rate range test on `config`'s model and data (default: the seed model
    with the default recipe) and suggest a learning rate; see this module's docstring.

    The model is the one `cnnlab train` would start from (new seeded weights, or `--init RUN`'s,
    frozen as its head epochs freeze it), fed the training split in the same shuffled order,
    class weights included; nothing is written anywhere.
    """
    from cnnlab.data.feed import load_feed
    from cnnlab.training.trainer import build_training_model, class_weights, resolve_defaults

    rates = exponential_rates(start_lr, end_lr, steps)  # a bad range fails before any work
    config = resolve_defaults(config or load_config())
    # One step a call, so that the rate changes (and the loss is read) every step.
    config = config.replace(train={"steps_per_execution": 1})
    feed = load_feed(config)
    model = build_training_model(config, feed)
    train = config.train
    weights = class_weights(config, feed) or None  # as training weighs them
    log.info(
        "learning-rate range test: %d steps of %d images, rates %.3g to %.3g",
        steps,
        train.batch_size,
        start_lr,
        end_lr,
    )
    data = feed.batches("train", train.batch_size, shuffle=True, seed=train.seed)
    per_epoch = max(1, math.ceil(feed.count("train") / train.batch_size))
    return range_test(model, data, rates, epochs=math.ceil(steps / per_epoch), class_weight=weights)


def range_test(
    model: keras.Model,
    data: Any,
    rates: Sequence[float],
    *,
    epochs: int,
    class_weight: dict[int, float] | None = None,
) -> LrFindResult:
    """Train compiled `model` on `data` one step at each of `rates` (over at most `epochs`
    passes), stopping early on divergence, then put every variable of the model and of its
    optimizer back as it was; the result with its suggestion."""
    keras = _keras()
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    saved = [keras.ops.convert_to_numpy(v) for v in (*model.variables, *optimizer.variables)]
    rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    finder = LrFinder(rates)
    try:
        model.fit(
            data,
            epochs=epochs,
            callbacks=[finder],
            class_weight=class_weight,
            shuffle=False,  # the dataset shuffles itself, as in training
            verbose=0,
        )
    finally:
        for variable, value in zip((*model.variables, *optimizer.variables), saved, strict=True):
            variable.assign(value)
        optimizer.learning_rate = rate
    if not finder.losses:
        raise ConfigError("the range test ran no step: the training split is empty")
    tested = rates[: len(finder.losses)]
    return LrFindResult(
        rates=list(tested),
        losses=finder.losses,
        smoothed=finder.smoothed,
        suggestion=suggest(tested, finder.smoothed, start_lr=rates[0]),
        stopped_early=finder.stopped_early,
    )


def suggest(rates: Sequence[float], smoothed: Sequence[float], *, start_lr: float) -> float:
    """The rate at the smoothed loss's minimum divided by `MARGIN` (10), no lower than
    `start_lr` (the loss then never fell: the range should start lower)."""
    index = _minimum_index(smoothed)
    if index == 0:
        log.warning(
            "the smoothed loss was lowest at the first rate, %.3g: try a lower --start-lr",
            rates[0],
        )
    return max(start_lr, rates[index] / MARGIN)


def _minimum_index(smoothed: Sequence[float]) -> int:
    finite = [(value, i) for i, value in enumerate(smoothed) if math.isfinite(value)]
    return min(finite)[1] if finite else 0
