"""Hand-made 3x3 filters and data-derived whitening filters, in plain NumPy.

The notes say a CNN's "initial filters are not random, they start with a set of known good
filters". In Keras they are random (glorot_uniform); these are the known good filters that
`--init-filters classic` and `--init-filters whitening` put into the first layer to test the
claim, and that `cnnlab visualize convpool` applies by hand.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from cnnlab.errors import ConfigError

# Classic image-processing kernels (as in any image-processing textbook).
CLASSIC_FILTERS: dict[str, NDArray[np.float32]] = {
    "vertical edge": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32),
    "horizontal edge": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float32),
    "outline (Laplacian)": np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype=np.float32),
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float32),
    "blur": np.full((3, 3), 1 / 9, dtype=np.float32),
}


def patches(
    images: NDArray[np.floating], size: int = 3, limit: int = 200_000, seed: int = 0
) -> NDArray[np.float64]:
    """Up to `limit` random `size`x`size` patches of (N, H, W[, C]) images, flattened.

    Each row is one patch laid out as a (size, size, C) conv kernel is: rows, columns, channels.
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 3:
        images = images[..., None]
    n, height, width, channels = images.shape
    rng = np.random.default_rng(seed)
    count = min(limit, n * (height - size + 1) * (width - size + 1))
    index = rng.integers(0, n, count)
    rows = rng.integers(0, height - size + 1, count)
    cols = rng.integers(0, width - size + 1, count)
    offsets = np.arange(size)
    picked = images[
        index[:, None, None],
        rows[:, None, None] + offsets[None, :, None],
        cols[:, None, None] + offsets[None, None, :],
    ]
    return picked.reshape(count, size * size * channels)


def whitening_filters(
    images: NDArray[np.floating], size: int = 3, eps: float = 5e-4
) -> NDArray[np.float32]:
    """Filters that whiten `size`x`size` patches of the data: (size, size, C, 2 * size**2 * C).

    The eigenvectors of the patch covariance, scaled by 1/sqrt(eigenvalue + eps), each with its
    negation so a ReLU keeps both signs (as the CIFAR-10 speed-run trainers do).
    """
    channels = 1 if np.ndim(images) == 3 else int(np.shape(images)[-1])
    flat = patches(images, size)
    flat = flat - flat.mean(axis=0)
    covariance = flat.T @ flat / len(flat)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    scaled = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + eps)
    kernels = scaled.T.reshape(-1, size, size, channels)
    both = np.concatenate([kernels, -kernels])
    return both.transpose(1, 2, 3, 0).astype(np.float32)


def classic_kernel_stack() -> NDArray[np.float32]:
    """The classic filters as a conv kernel: (3, 3, 1, number of filters)."""
    return np.stack(list(CLASSIC_FILTERS.values()), axis=-1)[:, :, None, :]


def init_first_conv(model: Any, method: str, images: NDArray[np.floating]) -> str | None:
    """Seed the first Conv2D layer's kernels with known filters; return its name (or None).

    `classic`: the hand-made 3x3 filters (rescaled to the norm of Keras' random ones),
    `whitening`: whitening filters of the training `images`' patches (any square kernel, any
    number of channels); the remaining kernels stay random. `random` leaves Keras'
    glorot_uniform initialisation alone.
    """
    if method == "random":
        return None
    conv = next((layer for layer in model.layers if type(layer).__name__ == "Conv2D"), None)
    if conv is None:
        raise ConfigError(f"--init-filters {method}: the model has no Conv2D layer")
    kernel = np.array(conv.kernel.numpy())
    height, width, channels, count = kernel.shape
    if method == "classic":
        if (height, width, channels) != (3, 3, 1):
            raise ConfigError(
                f"--init-filters classic needs a first Conv2D with 3x3 kernels on one channel; "
                f"{conv.name} has {height}x{width}x{channels}"
            )
        known = classic_kernel_stack()
        random_norm = np.sqrt((kernel**2).sum(axis=(0, 1, 2))).mean()
        known = known / np.sqrt((known**2).sum(axis=(0, 1, 2))) * random_norm
    elif method == "whitening":
        if height != width:
            raise ConfigError(
                f"--init-filters whitening needs square kernels; {conv.name} has {height}x{width}"
            )
        known = whitening_filters(images, size=height)
    else:
        raise ConfigError(f"unknown --init-filters {method!r}; use random, classic or whitening")
    n = min(count, known.shape[-1])
    kernel[..., :n] = known[..., :n]
    conv.kernel.assign(kernel)
    return str(conv.name)
