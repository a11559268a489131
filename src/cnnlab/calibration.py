"""How far a model's confidence can be trusted, and a temperature that mends it.

A classifier is calibrated when, of the images it answers with confidence 0.8, about 80% are
right. The expected calibration error (ECE, Guo et al. 2017, "On Calibration of Modern Neural
Networks") measures the gap: the confidences (each image's highest probability) are put in
equal-width bins over [0, 1], and the ECE is the mean over bins of |accuracy - mean confidence|,
each bin weighted by its share of the images. 0 is perfect; a model that is right 90% of the time
but always 99% sure scores about 0.09.

Temperature scaling (same paper) divides the logits by one number T fitted on the validation
split to minimise the negative log-likelihood: T > 1 softens an over-confident model, T < 1
sharpens a timid one, and the predicted class never changes. cnnlab's models end in a softmax
and output probabilities, so the logits are taken as their logarithms (equal to the true logits
up to a constant per image, which the softmax ignores).

The "unsure" rule flags an answer that looks unlike the validation images. Its score is the
energy (Liu et al. 2020, "Energy-based Out-of-distribution Detection"), -T * logsumexp(z / T) of
the model's true logits z: a picture of something the model never saw tends to raise no logit
high, which the softmax hides (its probabilities ignore the logits' common level) but the energy
keeps. An answer whose energy is above a threshold is unsure; the threshold is set so that at
most `UNSURE_SHARE` of the validation images (about 5%) are above it. Where the logits are not
known (a model whose last layer is not a softmax cnnlab can undo; an ONNX file exported before
cnnlab wrote the logits as its second output), the rule falls back to the highest probability
after the temperature, flagged below its own validation threshold. Measured on the seed model
(docs/predicting.md): the energy flags 72% of sign pictures and 6% of garment photos; the
probability 48% and 10%.

Pure numpy (and scipy for the 1-D search): no model, no run folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BINS",
    "TEMPERATURE_BOUNDS",
    "UNSURE_SHARE",
    "Reliability",
    "UnsureRule",
    "energy",
    "energy_threshold",
    "expected_calibration_error",
    "fit_temperature",
    "negative_log_likelihood",
    "reliability",
    "unsure_threshold",
    "with_temperature",
]

BINS = 15
TEMPERATURE_BOUNDS = (0.05, 20.0)
"""Where the temperature is looked for: a model that is always right drives the best T toward
0 (ever sharper answers cost ever less), so the search stops at a bound."""
UNSURE_SHARE = 0.05
"""The share of validation images the "unsure" threshold flags, at most."""
_TINY = 1e-12


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram's numbers: for each of `len(counts)` equal-width confidence bins,
    how many images fell in it, their accuracy and their mean confidence (0 for an empty bin)."""

    edges: np.ndarray
    counts: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray

    @property
    def ece(self) -> float:
        total = self.counts.sum()
        if total == 0:
            return 0.0
        gaps = np.abs(self.accuracy - self.confidence)
        return float((gaps * self.counts).sum() / total)

    def to_dict(self) -> dict[str, list[float] | list[int]]:
        return {
            "edges": [float(e) for e in self.edges],
            "counts": [int(c) for c in self.counts],
            "accuracy": [float(a) for a in self.accuracy],
            "confidence": [float(c) for c in self.confidence],
        }

    @classmethod
    def from_dict(cls, data: dict[str, list[float] | list[int]]) -> Reliability:
        """The table `to_dict` wrote (metrics.json's `calibration.before` and `.after`)."""
        return cls(
            edges=np.asarray(data["edges"], dtype=np.float64),
            counts=np.asarray(data["counts"], dtype=np.int64),
            accuracy=np.asarray(data["accuracy"], dtype=np.float64),
            confidence=np.asarray(data["confidence"], dtype=np.float64),
        )


@dataclass(frozen=True)
class UnsureRule:
    """When an answer is unsure, by the numbers `cnnlab evaluate` fitted on the validation split
    (kept in metrics.json): the mean energy of a picture's framings above `energy_threshold`
    where the logits are known and that threshold is set, else the highest probability after
    `temperature` below `threshold`."""

    temperature: float
    threshold: float
    energy_threshold: float | None = None

    def confidence(self, probs: np.ndarray) -> np.ndarray:
        """Each row's highest probability after the temperature."""
        rows = np.atleast_2d(np.asarray(probs, dtype=np.float64))
        return np.asarray(with_temperature(rows, self.temperature).max(axis=1))

    def uses_energy(self, logits: np.ndarray | None) -> bool:
        """Whether the energy decides, given what the model gave (its logits or None)."""
        return self.energy_threshold is not None and logits is not None

    def is_unsure(self, probs: np.ndarray, logits: np.ndarray | None = None) -> bool:
        """Whether one picture's answer is unsure: its probability row (the mean of its
        framings'), and its framings' logits (framings, classes) where the model gives them."""
        if self.energy_threshold is not None and logits is not None:
            mean_energy = float(energy(np.atleast_2d(logits), self.temperature).mean())
            return mean_energy > self.energy_threshold
        return bool(self.confidence(probs)[0] < self.threshold)

    def flags(self, probs: np.ndarray, logits: np.ndarray | None = None) -> np.ndarray:
        """`is_unsure` for many answers of one input each: rows of probabilities, with rows
        of logits where known."""
        if self.energy_threshold is not None and logits is not None:
            return np.asarray(energy(logits, self.temperature) > self.energy_threshold)
        return np.asarray(self.confidence(probs) < self.threshold)

    @classmethod
    def from_metrics(cls, metrics: dict[str, object] | None) -> UnsureRule | None:
        """The rule metrics.json holds (`temperature`, `unsure_threshold`, and
        `unsure_energy_threshold` where the logits were known), or None: not evaluated,
        evaluated by an older cnnlab, or no validation split to fit it on."""
        if not metrics:
            return None
        temperature, threshold = metrics.get("temperature"), metrics.get("unsure_threshold")
        if not isinstance(temperature, (int, float)) or not isinstance(threshold, (int, float)):
            return None
        if not temperature > 0:
            return None
        limit = metrics.get("unsure_energy_threshold")
        limit = float(limit) if isinstance(limit, (int, float)) else None
        return cls(float(temperature), float(threshold), limit)


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """-T * logsumexp(logits / T) of each row: low for a picture the model knows, higher for one
    whose logits are all low (Liu et al. 2020)."""
    from scipy.special import logsumexp

    if not temperature > 0:
        raise ValueError(f"temperature={temperature}: must be positive")
    z = np.asarray(logits, dtype=np.float64)
    return np.asarray(-temperature * logsumexp(z / temperature, axis=-1))


def energy_threshold(logits: np.ndarray, temperature: float, share: float = UNSURE_SHARE) -> float:
    """The energy above which at most `share` of these images lie: the smallest observed
    energy e with #(energy > e) <= share * n (0.0 for no images)."""
    if not 0 <= share < 1:
        raise ValueError(f"share={share}: must be in [0, 1)")
    values = np.sort(energy(np.atleast_2d(logits), temperature))[::-1]
    if values.size == 0 or np.asarray(logits).size == 0:
        return 0.0
    allowed = math.floor(share * len(values))  # images that may lie above
    return float(values[allowed])


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64).ravel()
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probabilities of shape {probs.shape} do not match {len(labels)} labels")
    return probs, labels


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> Reliability:
    """Bin the images by confidence (bin i holds confidences in (i/bins, (i+1)/bins]) and give
    each bin's count, accuracy and mean confidence."""
    if bins < 1:
        raise ValueError(f"bins={bins}: need at least one")
    probs, labels = _check(probs, labels)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges[1:-1], confidence, side="left"), 0, bins - 1)
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    sums_correct = np.bincount(index, weights=correct, minlength=bins)
    sums_confidence = np.bincount(index, weights=confidence, minlength=bins)
    filled = counts > 0
    return Reliability(
        edges=edges,
        counts=counts.astype(np.int64),
        accuracy=np.divide(sums_correct, counts, out=np.zeros(bins), where=filled),
        confidence=np.divide(sums_confidence, counts, out=np.zeros(bins), where=filled),
    )


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """ECE: sum over equal-width confidence bins of |accuracy - mean confidence| times the
    bin's share of the images (Guo et al. 2017)."""
    return reliability(probs, labels, bins).ece


def with_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(probs) / T): the probabilities of the logits divided by `temperature`."""
    if not temperature > 0:
        raise ValueError(f"temperature={temperature}: must be positive")
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), _TINY, None)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log(probability of the true class)."""
    probs, labels = _check(probs, labels)
    picked = probs[np.arange(len(labels)), labels]
    return 0.0 - float(np.mean(np.log(np.clip(picked, _TINY, None))))  # 0.0, never -0.0


def fit_temperature(
    probs: np.ndarray,
    labels: np.ndarray,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
) -> float:
    """The temperature in `bounds` that minimises the NLL of `with_temperature(probs, T)`,
    found by a bounded 1-D search on log T (1.0 for no images)."""
    from scipy.optimize import minimize_scalar

    probs, labels = _check(probs, labels)
    if len(labels) == 0:
        return 1.0
    logits = np.log(np.clip(probs, _TINY, None))
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        z = logits / math.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(z).sum(axis=1))
        return float(np.mean(log_norm - z[rows, labels]))

    low, high = (math.log(b) for b in bounds)
    result = minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    best = float(result.x)
    if nll(0.0) <= nll(best):  # never worse than leaving the model as it is
        best = 0.0
    return math.exp(best)


def unsure_threshold(probs: np.ndarray, share: float = UNSURE_SHARE) -> float:
    """The confidence below which at most `share` of these images fall: the largest observed
    confidence c with #(confidence < c) <= share * n (0.0 for no images)."""
    if not 0 <= share < 1:
        raise ValueError(f"share={share}: must be in [0, 1)")
    confidence = np.sort(np.asarray(probs, dtype=np.float64).max(axis=1))
    if len(confidence) == 0:
        return 0.0
    allowed = math.floor(share * len(confidence))  # images that may fall below
    return float(confidence[allowed])
