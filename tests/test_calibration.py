"""The calibration maths (`cnnlab.calibration`) on cases with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.calibration import (
    Reliability,
    UnsureRule,
    energy,
    energy_threshold,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability,
    unsure_threshold,
    with_temperature,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_ece_by_hand() -> None:
    # Two bins, (0, 0.5] and (0.5, 1]. Four answers at confidence 0.4, one right: accuracy 0.25,
    # gap 0.15, share 0.4. Six at 0.9, three right: accuracy 0.5, gap 0.4, share 0.6.
    # ECE = 0.4 * 0.15 + 0.6 * 0.4 = 0.30.
    low = [0.4, 0.3, 0.3]
    high = [0.9, 0.05, 0.05]
    probs = np.array([low] * 4 + [high] * 6)
    labels = np.array([0, 1, 1, 2, 0, 0, 0, 1, 2, 1])  # 1 of 4 right, then 3 of 6
    assert expected_calibration_error(probs, labels, bins=2) == pytest.approx(0.30)
    table = reliability(probs, labels, bins=2)
    assert table.counts.tolist() == [4, 6]
    assert table.accuracy == pytest.approx([0.25, 0.5])
    assert table.confidence == pytest.approx([0.4, 0.9])
    assert Reliability.from_dict(table.to_dict()).ece == pytest.approx(0.30)


def test_ece_of_a_calibrated_and_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, size=(20_000, 5))
    probs = _softmax(logits)
    labels = np.array([rng.choice(5, p=p) for p in probs])  # right as often as it says
    assert expected_calibration_error(probs, labels) < 0.02
    assert expected_calibration_error(_softmax(3 * logits), labels) > 0.1


def test_with_temperature_keeps_the_answer_and_softens() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.05, 0.9, 0.05]])
    assert with_temperature(probs, 1.0) == pytest.approx(probs)
    soft = with_temperature(probs, 2.0)
    assert soft.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert (soft.argmax(axis=1) == probs.argmax(axis=1)).all()
    assert (soft.max(axis=1) < probs.max(axis=1)).all()
    # T = 2 on log-probabilities: proportional to sqrt(p).
    expected = np.sqrt(probs) / np.sqrt(probs).sum(axis=1, keepdims=True)
    assert soft == pytest.approx(expected)
    with pytest.raises(ValueError, match="positive"):
        with_temperature(probs, 0.0)


def test_temperature_undoes_overconfidence() -> None:
    # A calibrated model's logits made three times sharper: the fitted T is near 3, and the NLL
    # and the ECE drop.
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1.5, size=(5_000, 10))
    labels = np.array([rng.choice(10, p=p) for p in _softmax(logits)])
    sharp = _softmax(3 * logits)
    temperature = fit_temperature(sharp, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    calibrated = with_temperature(sharp, temperature)
    assert (
        negative_log_likelihood(calibrated, labels) < negative_log_likelihood(sharp, labels) - 0.1
    )
    assert expected_calibration_error(calibrated, labels) < 0.03
    # And a timid model (logits / 2) is sharpened: T near 1/2.
    assert fit_temperature(_softmax(logits / 2), labels) == pytest.approx(0.5, rel=0.1)


def test_unsure_threshold_flags_at_most_the_share() -> None:
    rng = np.random.default_rng(2)
    probs = _softmax(rng.normal(0, 2, size=(1_000, 4)))
    threshold = unsure_threshold(probs, 0.05)
    flagged = (probs.max(axis=1) < threshold).mean()
    assert 0.04 <= flagged <= 0.05
    assert unsure_threshold(probs, 0.0) == pytest.approx(probs.max(axis=1).min())


def test_the_unsure_rule_from_metrics() -> None:
    assert UnsureRule.from_metrics(None) is None
    assert UnsureRule.from_metrics({"test_accuracy": 0.9}) is None  # evaluated before the rule
    assert UnsureRule.from_metrics({"temperature": None, "unsure_threshold": None}) is None
    rule = UnsureRule.from_metrics({"temperature": 2.0, "unsure_threshold": 0.6})
    assert rule == UnsureRule(2.0, 0.6)
    # [0.7, 0.2, 0.1] at T = 2 is proportional to the square roots: top 0.53, below 0.6.
    assert rule.confidence(np.array([0.7, 0.2, 0.1]))[0] == pytest.approx(
        np.sqrt(0.7) / np.sqrt([0.7, 0.2, 0.1]).sum()
    )
    assert rule.is_unsure(np.array([0.7, 0.2, 0.1]))
    assert not rule.is_unsure(np.array([0.98, 0.01, 0.01]))


def test_energy_by_hand() -> None:
    # -T logsumexp(z / T): two equal logits 0 give -log 2; raising every logit by c lowers the
    # energy by c (the softmax would not notice); a higher T spreads it.
    assert energy(np.array([[0.0, 0.0]]))[0] == pytest.approx(-np.log(2))
    z = np.array([[1.0, 3.0, -2.0]])
    assert energy(z + 5.0)[0] == pytest.approx(energy(z)[0] - 5.0)
    assert energy(z, 2.0)[0] == pytest.approx(-2.0 * np.log(np.exp(z / 2.0).sum()))
    with pytest.raises(ValueError, match="positive"):
        energy(z, 0.0)


def test_energy_threshold_flags_at_most_the_share() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, size=(1_000, 5))
    threshold = energy_threshold(logits, 1.5, 0.05)
    flagged = (energy(logits, 1.5) > threshold).mean()
    assert 0.04 <= flagged <= 0.05
    assert energy_threshold(logits, 1.5, 0.0) == pytest.approx(energy(logits, 1.5).max())
    assert energy_threshold(np.zeros((0, 5)), 1.0) == 0.0


def test_the_energy_decides_where_the_logits_are_known() -> None:
    rule = UnsureRule.from_metrics(
        {"temperature": 1.0, "unsure_threshold": 0.6, "unsure_energy_threshold": -3.0}
    )
    assert rule == UnsureRule(1.0, 0.6, -3.0)
    sure_probs = np.array([0.98, 0.01, 0.01])
    # The same probabilities from low logits (energy about -1.0) and from high ones (-5.0).
    low, high = np.log(sure_probs) + 1.0, np.log(sure_probs) + 5.0
    assert rule.is_unsure(sure_probs, low[np.newaxis])
    assert not rule.is_unsure(sure_probs, high[np.newaxis])
    assert not rule.is_unsure(sure_probs)  # no logits: the probability threshold decides
    # A picture's framings: their mean energy decides.
    assert rule.is_unsure(sure_probs, np.stack([high, low, low]))
    assert not rule.is_unsure(sure_probs, np.stack([high, high, low]))


def test_flags_are_is_unsure_row_by_row() -> None:
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 3, size=(200, 5))
    probs = _softmax(logits)
    for rule in (UnsureRule(1.3, 0.6, -2.5), UnsureRule(1.3, 0.6)):
        flags = rule.flags(probs, logits)
        expected = [rule.is_unsure(p, z[np.newaxis]) for p, z in zip(probs, logits, strict=True)]
        assert flags.tolist() == expected
        assert 0 < flags.sum() < len(flags)
    rule = UnsureRule(1.3, 0.6, -2.5)
    assert rule.flags(probs).tolist() == [rule.is_unsure(p) for p in probs]  # no logits
