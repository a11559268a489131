from __future__ import annotations

import warnings

import pytest

from cnnlab.errors import CnnlabError
from cnnlab.model.builder import build_model
from cnnlab.visualize.model import (
    BRANCHED_NOTE,
    FONT_SIZE,
    _drawn_layers,
    _font,
    _is_chain,
    draw_model,
    format_shape,
)


def test_tiny_model_picture(tiny_model, check_png):
    check_png(draw_model(tiny_model), "tiny_model")


def test_seed_model_picture_has_legend_and_shapes(check_png):
    seed = build_model("basic_cnn", (28, 28, 1), 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of visualkeras' warnings should reach users
        full = check_png(draw_model(seed), "seed")
    bare = draw_model(seed, legend=False, shapes=False)
    no_shapes = draw_model(seed, shapes=False)
    assert full.width > 2 * full.height  # a long row of layers
    assert full.height > no_shapes.height > bare.height  # room for the captions and the legend


def test_functional_model_with_branches_is_drawn_with_a_note(check_png):
    from cnnlab._backend import keras as _keras

    keras = _keras()
    inputs = keras.Input((28, 28, 1))
    left = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    right = keras.layers.Conv2D(8, 1)(inputs)
    merged = keras.layers.Add()([left, right])
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(merged))
    branched = keras.Model(inputs, outputs, name="branched")
    chain = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(left)), name="chain")

    with_note = check_png(draw_model(branched), "branched")
    without_note = draw_model(chain)
    note_width = _font(FONT_SIZE).getbbox(BRANCHED_NOTE)[2]
    assert with_note.width > note_width  # the note fits
    assert _is_chain(chain, _drawn_layers(chain))
    assert not _is_chain(branched, _drawn_layers(branched))
    assert without_note.size != with_note.size


def test_unbuilt_model_is_a_user_error():
    from cnnlab._backend import keras as _keras

    keras = _keras()
    with pytest.raises(CnnlabError, match="no input shape"):
        draw_model(keras.Sequential([keras.layers.Dense(3)]))


def test_format_shape():
    assert format_shape((None, 28, 28, 64)) == "28x28x64"
    assert format_shape((None, 128)) == "128"
    assert format_shape((None, None, 3)) == "?x3"
    assert format_shape(None) == "?"
