"""Which "unsure" score tells pictures of other things from a garment model's own pictures?

For an evaluated Fashion-MNIST run: the model's test images, garment photos made from test
garments (`photoset.make_photo`, the photo path a user's picture takes) and sign pictures
(`signs.make_signs`, not garments), each scored by several rules; every rule's threshold flags
5% of the validation images, as `cnnlab evaluate` sets it. Then what the shipped predictor says
(`predict`'s `unsure`), on Keras and, with --onnx, on the exported ONNX file.

    cnnlab train --seed 2 && cnnlab evaluate runs/basic_cnn-fashion_mnist
    python benchmarks/unsure.py runs/basic_cnn-fashion_mnist [--onnx]

Scores (higher = more unsure): the highest probability after the temperature (Hendrycks and
Gimpel 2017), the entropy of the probabilities, the energy -T logsumexp(z / T) of the logits
(Liu et al. 2020), and the Mahalanobis distance of the penultimate features to the nearest
class mean (Lee et al. 2018, one shared covariance fitted on the training split).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from photoset import make_photo
from signs import make_signs

from cnnlab.calibration import energy
from cnnlab.prediction.inference import load_predictor
from cnnlab.runs import Run

CONDITIONS = ("clean", "noise", "paper", "fabric", "gradient", "shadow", "jpeg", "coloured")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an evaluated Fashion-MNIST run folder")
    parser.add_argument("--signs", type=int, default=200, help="sign pictures (seed 7)")
    parser.add_argument("--photos", type=int, default=320, help="garment photos (seed 5)")
    parser.add_argument("--onnx", action="store_true", help="also the run's model.onnx")
    args = parser.parse_args(argv)
    run = Run(args.run)
    predictor = load_predictor(run)
    rule = predictor.unsure_rule
    if rule is None or predictor.with_logits is None:
        sys.exit(f"{args.run}: evaluate it first (cnnlab evaluate), with a softmax model")
    work = Path(tempfile.mkdtemp(prefix="unsure-"))
    make_signs(work / "signs", args.signs, 7, "flat")
    signs = sorted(p for p in (work / "signs").rglob("*") if p.is_file())
    feed = run.data(validation=True)
    x_test, y_test = feed.arrays("test")
    rng = np.random.default_rng(5)
    photos = []
    for i, k in enumerate(rng.choice(len(x_test), args.photos, replace=False)):
        garment = np.round(x_test[k, :, :, 0] * 255).astype(np.uint8)
        path = work / f"photo-{i:03d}-{y_test[k]}.jpg"
        path.write_bytes(make_photo(garment, CONDITIONS[i % len(CONDITIONS)], 1, rng).jpeg())
        photos.append(path)

    scorer = _Scorer(predictor, feed, rule.temperature)
    sets = {
        "validation": scorer.arrays(feed.arrays("val")[0]),
        "test images": scorer.arrays(x_test),
        "garment photos": scorer.pictures(photos),
        "sign pictures": scorer.pictures(signs),
    }
    print(f"{args.run}: T = {rule.temperature:.3f}; {len(signs)} signs, {len(photos)} photos")
    print("| score | " + " | ".join(f"{name} flagged" for name in list(sets)[1:]) + " |")
    print("|---|" + "---:|" * (len(sets) - 1))
    for score in sets["validation"]:
        limit = np.quantile(sets["validation"][score], 0.95)
        shares = [np.mean(values[score] > limit) for values in list(sets.values())[1:]]
        print(f"| {score} | " + " | ".join(f"{share:.1%}" for share in shares) + " |")
    print()
    paths = {"Keras": args.run} | ({"ONNX": args.run / "model.onnx"} if args.onnx else {})
    paths["Keras, the probability rule (no logits: the rule before the energy)"] = args.run
    for name, path in paths.items():
        shipped = load_predictor(path)
        shipped.unsure_rule = rule
        if name.startswith("Keras, the probability"):
            shipped.with_logits = None  # type: ignore[attr-defined]
        for what, pictures in (("garment photos", photos), ("sign pictures", signs)):
            flags = [bool(r.unsure) for r in shipped.predict(pictures)]
            print(f"predict ({name}): {np.mean(flags):.1%} of {what} unsure")
    return 0


class _Scorer:
    """Every score of a set of pictures, each picture's framings averaged as `predict` does."""

    def __init__(self, predictor: object, feed: object, temperature: float) -> None:
        import keras

        self.predictor = predictor
        self.temperature = temperature
        model = predictor.model  # type: ignore[attr-defined]
        dense = model.layers[-1]
        self.features = keras.Model(model.inputs[0], dense.input)
        self.weights = [np.asarray(w, np.float64) for w in dense.get_weights()]
        x_train, y_train = feed.arrays("train")  # type: ignore[attr-defined]
        h = self._penultimate(x_train)
        self.means = np.stack(
            [h[y_train == c].mean(axis=0) for c in range(self.weights[0].shape[1])]
        )
        centred = h - self.means[y_train]
        covariance = centred.T @ centred / len(h) + 1e-6 * np.eye(h.shape[1])
        self.precision = np.linalg.inv(covariance)

    def _penultimate(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.features.predict(x, batch_size=512, verbose=0), np.float64)

    def _scores(self, h: np.ndarray) -> dict[str, np.ndarray]:
        kernel, bias = self.weights
        z = h @ kernel + bias
        z_t = z / self.temperature
        p = np.exp(z_t - z_t.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        d = h[..., None, :] - self.means
        return {
            "max probability after T (below)": -p.max(axis=-1),
            "entropy": -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=-1),
            "energy (the rule)": energy(z, self.temperature),
            "Mahalanobis, penultimate": np.einsum("...ci,ij,...cj->...c", d, self.precision, d).min(
                axis=-1
            ),
        }

    def arrays(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return self._scores(self._penultimate(x))

    def pictures(self, paths: list[Path]) -> dict[str, np.ndarray]:
        prepared = self.predictor.prepare(paths)  # type: ignore[attr-defined]
        each = [self._scores(self._penultimate(p.inputs)) for p in prepared if p.inputs is not None]
        return {name: np.array([s[name].mean() for s in each]) for name in each[0]}


if __name__ == "__main__":
    sys.exit(main())
