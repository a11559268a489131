"""Pictures of a CNN and its training: one module per kind, each returning a figure or image.

`render(kind, run)` makes one and saves it as a PNG; the modules themselves are importable for
notebook use (`cnnlab.visualize.features.plot_features(model, image)` returns a Figure).
"""

from cnnlab.visualize.render import KINDS, Rendered, render

__all__ = ["KINDS", "Rendered", "render"]
