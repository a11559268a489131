# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Introduction to Convolutional Neural Networks, executable
#
# These are the study notes "Introduction to Convolutional Neural Networks", section by section,
# run with cnnlab's Python API: convolutions and pooling on an array of values, the notes' CNN
# for Fashion-MNIST (its summary, its shapes worked out, and where the notes' prose goes wrong),
# the visualkeras drawing, compile and fit (the notes' recipe, then callbacks), evaluation,
# using the trained CNN on new images, what each layer saw, and fully convolutional networks.
#
# One setting at the top chooses how much is trained: `full` (the committed outputs: all
# 60,000 training images, a few minutes on a laptop CPU) or `quick` (a few thousand images and
# one or two epochs, what the test suite runs). Everything else follows from it.

# %% tags=["parameters"]
import os

SETTING = os.environ.get("CNNLAB_TUTORIAL_SETTING", "full")  # "full" or "quick"

# %%
import logging
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
# TensorFlow's Python notices (retracing) go too: a filter, since TensorFlow sets its logger to
# INFO in a notebook the first time it logs, whatever level was set before
logging.getLogger("tensorflow").addFilter(lambda record: record.levelno >= logging.ERROR)

import numpy as np
from IPython.display import Image, display

import cnnlab
from cnnlab.visualize._common import to_png

QUICK = SETTING == "quick"
TRAIN_LIMIT = 3000 if QUICK else 0  # 0: all 60,000 training images
SEED_EPOCHS = 1 if QUICK else 5  # the notes fit 50 epochs; 5 show the same curve's start
MAX_EPOCHS = 2 if QUICK else 15  # the default recipe stops early, usually after 9-13
FCN_EPOCHS = 1 if QUICK else 8  # the fcn preset's 20 reach 91.7%; 8 show the idea
RUNS_DIR = Path("runs") / "tutorial"


def show(figure):
    """Show a matplotlib Figure (cnnlab draws without pyplot) or a PIL image inline."""
    display(Image(to_png(figure)))


print(f"setting {SETTING!r}: {TRAIN_LIMIT or 'all'} training images, cnnlab {cnnlab.__version__}")

# %% [markdown]
# ## 1. Convolutions and pooling
#
# The notes: *"Convolutions are filters applied over an array of values"* and *"Pooling is a
# method for image comprehension"*. Both fit in a few lines of NumPy. A convolution slides a
# small kernel over the array and, at each position, multiplies and adds (Keras' `Conv2D`
# computes exactly this cross-correlation); `'valid'` padding keeps only the positions where the
# whole kernel fits, so a 6x6 array and a 3x3 kernel give 6 - 3 + 1 = 4 positions a side.

# %%
array = np.array(
    [
        [0, 0, 0, 9, 9, 9],
        [0, 0, 0, 9, 9, 9],
        [0, 0, 0, 9, 9, 9],
        [0, 0, 0, 9, 9, 9],
        [0, 0, 0, 9, 9, 9],
        [0, 0, 0, 9, 9, 9],
    ],
    dtype=np.float32,
)  # a vertical edge: dark on the left, bright on the right
vertical_edge = np.array([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]], dtype=np.float32)


def convolve_by_hand(image, kernel):
    kh, kw = kernel.shape
    out = np.zeros((image.shape[0] - kh + 1, image.shape[1] - kw + 1), dtype=np.float32)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = np.sum(image[i : i + kh, j : j + kw] * kernel)
    return out


by_hand = convolve_by_hand(array, vertical_edge)
print(by_hand)

# %% [markdown]
# The filter answers 27 exactly where the edge is and 0 on flat regions: a filter is a
# question asked of every neighbourhood. cnnlab's `convolve2d` (used by the pictures below)
# gives the same numbers, and so does a Keras `Conv2D` holding this kernel:

# %%
from cnnlab.visualize.convpool import convolve2d, max_pool

assert np.array_equal(convolve2d(array, vertical_edge), by_hand)

import keras

conv = keras.layers.Conv2D(1, 3, use_bias=False)
conv.build((None, 6, 6, 1))
conv.set_weights([vertical_edge[:, :, None, None]])
keras_answer = keras.ops.convert_to_numpy(conv(array[None, :, :, None]))[0, :, :, 0]
print("Keras Conv2D agrees:", np.allclose(keras_answer, by_hand))

# %% [markdown]
# Max pooling keeps the largest value of each 2x2 block: the 4x4 map becomes 2x2, a quarter of
# the values, and what survives is *whether* the feature was there, not exactly where.

# %%
pooled = max_pool(np.maximum(by_hand, 0))
print(pooled)

# %% [markdown]
# The same on a real Fashion-MNIST image, with a few hand-made filters (edges, blur, sharpen):
# every panel says its size, 28x28 -> 26x26 after a 3x3 'valid' convolution -> 13x13 after
# pooling.

# %%
from cnnlab.visualize.convpool import plot_convpool

dataset = cnnlab.load_dataset("fashion_mnist")
splits = cnnlab.prepare(dataset, validation_split=0.1, seed=1, limit=TRAIN_LIMIT or None)
print(f"{len(splits.x_train):,} training, {len(splits.x_val):,} validation, "
      f"{len(splits.x_test):,} test images of {splits.input_shape}; classes: {splits.class_names}")
show(plot_convpool(splits.x_test[0]))

# %% [markdown]
# The notes also say *"the initial filters are not random: they start with a set of known good
# filters"*. In Keras they are random (Glorot uniform). cnnlab lets you start the first layer
# from hand-made filters (`init_filters="classic"`) or from whitening filters of the data
# (`"whitening"`, its default recipe). Over three seeds the classic filters made no measurable
# difference, while whitening filters learned faster (the table is in docs/training.md). Here
# are the three starting points side by side:

# %%
from cnnlab.model.kernels import init_first_conv
from cnnlab.visualize.filters import plot_filter_sets

starting_points = {}
for method in ("random", "classic", "whitening"):
    fresh = cnnlab.build_model("basic_cnn", splits.input_shape, len(splits.class_names))
    init_first_conv(fresh, method, splits.x_train)
    starting_points[f"{method} init"] = keras.ops.convert_to_numpy(fresh.layers[0].kernel)[..., :18]
show(plot_filter_sets(starting_points))

# %% [markdown]
# ## 2. The default CNN model
#
# Three `Conv2D` layers (64 with `padding='same'`, 64, 32; 3x3, ReLU), each followed by
# `MaxPool2D(2, 2)`, then `Flatten`, `Dense(128, relu)` and `Dense(10, softmax)`. In cnnlab the
# model is data (`src/cnnlab/architectures/basic_cnn.toml`), built into the same Keras model:

# %%
from cnnlab.model.builder import summary_text

model = cnnlab.build_model("basic_cnn", splits.input_shape, len(splits.class_names))
print(summary_text(model))
assert model.count_params() == 73_834

# %% [markdown]
# 73,834 parameters, as in the notes. The notes' *summary table* is right, but their prose
# says the first convolution outputs 26x26, the first pooling 13x13, and that Flatten's 128
# values are 3x3x32. The arithmetic: a convolution's output side is
# `(n + 2p - k) / s + 1` for input side n, padding p, kernel k and stride s; a 2x2 pooling
# halves (rounding down). `cnnlab summary --explain` does it for every layer:

# %%
from cnnlab.model.explain import format_explanation

print(format_explanation(model))

# %% [markdown]
# So the mathematics wins: with `'same'` padding (p = 1 for a 3x3 kernel) the first layer
# keeps 28x28, pooling gives 14x14, and the chain 14 -> 12 -> 6 -> 4 -> 2 ends in 2x2x32 = 128
# values; 3x3x32 would be 288 and would not match the 16,512 weights of the Dense layer
# (128 x 128 + 128). Checked here against Keras' own shapes:

# %%
shapes = [tuple(layer.output.shape[1:]) for layer in model.layers]
print(shapes)
assert shapes[0] == (28, 28, 64) and shapes[1] == (14, 14, 64)  # not 26x26, not 13x13
assert shapes[5] == (2, 2, 32) and shapes[6] == (128,)  # 2x2x32 = 128, not 3x3x32

# %% [markdown]
# ## 3. The visualkeras drawing
#
# `visualkeras.layered_view(model, scale_xy=4)`, as the notes do (cnnlab adds the output
# shapes and a legend, and works around visualkeras' Keras 3 gaps):

# %%
from cnnlab.visualize.model import draw_model

show(draw_model(model, scale_xy=4))

# %% [markdown]
# ## 4. Compile and fit
#
# The notes compile with `adam`, `sparse_categorical_crossentropy` and `accuracy`, and fit 50
# epochs at batch 32 with no validation data. cnnlab's `seed` recipe is exactly that; here for
# a few epochs. Every run leaves a run folder (`config.toml`, `run.json`, `model.keras`,
# `history.csv`), which every later step reads.

# %%
seed_config = cnnlab.load_config(
    recipe_name="seed",
    overrides={
        "train.epochs": SEED_EPOCHS,
        "train.seed": 1,
        "data.limit": TRAIN_LIMIT,
        "run.runs_dir": str(RUNS_DIR),
        "run.name": "seed-recipe",
    },
)
seed_run = cnnlab.train(seed_config, overwrite=True)
print(seed_run.run_dir, seed_run.state.status, f"{seed_run.state.epochs_run} epochs")

# %% [markdown]
# The notes' recipe never looks at data it did not train on, so it cannot tell learning from
# memorising. cnnlab's default recipe holds out 10% for validation and lets **callbacks**
# control training, as the notes' "callbacks to control training" suggest:
#
# - early stopping (Keras' `EarlyStopping`, patience 3, best weights restored),
# - a checkpoint that keeps the best epoch's model (`cnnlab.BestModelCheckpoint`, written
#   atomically, so a killed run never leaves half a file),
# - stop at a target accuracy (`cnnlab.TargetReached`),
# - a learning rate halved after every epoch, and whitening first-layer filters.

# %%
config = cnnlab.load_config(
    overrides={
        "train.epochs": MAX_EPOCHS,
        "train.seed": 2,
        "train.target_accuracy": 0.93,
        "data.limit": TRAIN_LIMIT,
        "run.runs_dir": str(RUNS_DIR),
        "run.name": "default-recipe",
    }
)
result = cnnlab.train(config, overwrite=True)
state = result.state
print(f"best epoch {state.best_epoch} of {state.epochs_run}: {state.best_metrics}")

# %%
from cnnlab.visualize.history import plot_history

show(plot_history(result.history, monitor="val_accuracy"))

# %% [markdown]
# Running the same configuration again does nothing: the run folder says it is finished. An
# interrupted run (Ctrl-C, a killed process) resumes from its last completed epoch instead.

# %%
again = cnnlab.train(config)
assert again.state.epochs_run == state.epochs_run
print("already finished:", again.run_dir)

# %% [markdown]
# ## 5. Evaluate
#
# Only this step touches the 10,000 test images: loss and accuracy, precision, recall and F1
# per class, and the confusion matrix.

# %%
from cnnlab.evaluation import format_report

metrics = cnnlab.evaluate(result.run_dir)
print(format_report(metrics))

# %%
from cnnlab.visualize.confusion import plot_confusion

show(plot_confusion(metrics["confusion_matrix"], metrics["class_names"]))

# %% [markdown]
# The images the model gets most wrong (highest loss), with the true and predicted class:
# shirts, T-shirts, pullovers and coats are the usual confusion.

# %%
from cnnlab.visualize.errors import plot_errors

trained = result.model
show(plot_errors(trained, splits.x_test, splits.y_test, splits.class_names, n=12))

# %% [markdown]
# ## 6. Using the CNN on new images
#
# A new picture is not a Fashion-MNIST image: a drawing is light on dark and fills the frame,
# a photo is a dark garment on a light, noisy background. `cnnlab.predict` turns any picture
# into what the model was trained on (grayscale, background found and removed, object trimmed
# and centred on 28x28) before predicting. First a drawing of trousers:

# %%
from PIL import Image as PILImage
from PIL import ImageDraw

drawing = PILImage.new("L", (200, 200), 0)
pen = ImageDraw.Draw(drawing)
pen.rectangle([70, 20, 130, 60], fill=255)  # waistband
pen.polygon([(70, 60), (98, 60), (92, 185), (66, 185)], fill=255)  # left leg
pen.polygon([(102, 60), (130, 60), (134, 185), (108, 185)], fill=255)  # right leg
[prediction] = cnnlab.predict(result.run_dir, [drawing])
print(prediction.top)
display(drawing)

# %% [markdown]
# Then a photo-like picture: a test image of an ankle boot, dark on a wood-grain table lit
# unevenly, off-centre on a 320x320 JPEG, as a phone photo of clothing looks
# (`benchmarks/photoset.py` makes such pictures, with the garment's true box, for the photo benchmark).

# %%
import io
import sys
from pathlib import Path

# The photo generator is a benchmark helper beside this repository's benchmarks, not part of
# the installed library.
sys.path.insert(0, str(Path(cnnlab.__file__).resolve().parents[2] / "benchmarks"))
from photoset import make_photo  # noqa: E402

boot = (splits.x_test[splits.y_test.ravel() == 9][0, :, :, 0] * 255).astype(np.uint8)
shot = make_photo(boot, "wood", 1, np.random.default_rng(0))
photo = PILImage.open(io.BytesIO(shot.jpeg()))
[prediction] = cnnlab.predict(result.run_dir, [photo])
print(prediction.top, "| found box:", prediction.box, "| true box:", shot.box)
display(photo)

# %% [markdown]
# What the model received, step by step: grey, the background's level under every pixel
# (fitted, so uneven light is subtracted), the pixels that stand out from it by more than a few
# times the background's own spread, the crop around the garment, and the 28x28 input
# (`cnnlab visualize preprocess IMAGE` draws the same).

# %%
from cnnlab.prediction.preprocess import preprocess_steps
from cnnlab.visualize.preprocess import plot_preprocess

steps = preprocess_steps(photo)
show(plot_preprocess(steps, "an ankle boot on wood grain"))
received = steps.array

# %% [markdown]
# ## 7. What each layer saw, and where the model looked
#
# Every convolution and pooling layer's output channels for that input: the first layer finds
# edges and blobs at 28x28, the last ones respond to whole parts at 2x2.

# %%
from cnnlab.visualize.features import plot_features

show(plot_features(trained, received))

# %% [markdown]
# Every number in those maps is a sum you can redo by hand. Take the first convolution's output
# at row 18, column 0, channel 3, where the boot's toe meets the picture's left edge: with
# `'same'` padding its 3x3 window reaches one column left of the picture, where the layer reads
# zeros. The output is that patch times the filter's 3x3 weights, summed, plus the filter's
# bias, then ReLU. cnnlab's `explain_cell` returns every term of it (the page shows the same
# when you click a cell of a map, and `POST /api/explain/cell` answers it as JSON); NumPy redoes
# the sum here, and both are checked against the output Keras computed for that layer:

# %%
from cnnlab.export import float32_model
from cnnlab.prediction.arithmetic import explain_cell

# Where the CPU has bfloat16 instructions the model trained in mixed_bfloat16, and its layers
# multiply bfloat16 copies of the values (about 3 significant digits). A float32 copy with the
# same weights makes every digit comparable.
exact = float32_model(trained)
conv = next(layer for layer in exact.layers if isinstance(layer, keras.layers.Conv2D))
assert conv.padding == "same" and conv.kernel_size == (3, 3) and conv.strides == (1, 1)
row, col, channel = 18, 0, 3
picture = np.asarray(received, dtype=np.float64).reshape(28, 28)
patch = np.pad(picture, 1)[row : row + 3, col : col + 3]  # the zero ring is 'same' padding
kernel = keras.ops.convert_to_numpy(conv.kernel).astype(np.float64)[:, :, 0, channel]
bias = float(keras.ops.convert_to_numpy(conv.bias)[channel])
by_hand = max(float(np.sum(patch * kernel)) + bias, 0.0)  # the sum, plus the bias, then ReLU

cell = explain_cell(exact, received, conv.name, row, col, channel)
computed = keras.ops.convert_to_numpy(conv(picture[None, :, :, None].astype("float32")))
keras_value = float(np.asarray(computed, dtype=np.float64)[0, row, col, channel])
print(cell.describe())
print("patch (its left column is padding):\n", patch.round(3))
print(f"by hand: {np.sum(patch * kernel):.5f} + bias {bias:.5f}, then ReLU: {by_hand:.5f}")
print(f"explain_cell: {cell.value:.5f}   Keras' layer output: {keras_value:.5f}")
# Equal up to float32's rounding of the same sum done in another order (cell.tolerance).
assert abs(by_hand - cell.value) <= cell.tolerance
assert abs(by_hand - keras_value) <= cell.tolerance
print(f"they agree within {cell.tolerance:.1e} ({cell.dtype})")

# %% [markdown]
# Grad-CAM weighs the last convolution's channels by how much they raise the predicted class's
# score, and shows where in the image those channels fired.

# %%
from cnnlab.visualize.gradcam import plot_gradcam

show(plot_gradcam(trained, received, splits.class_names))

# %% [markdown]
# ## 8. Fully convolutional networks
#
# Why does the seed model take 28x28 images only? Convolutions and pooling work on any size,
# but `Flatten` turns the last 2x2x32 block into exactly 128 values, and the next `Dense` layer
# has exactly 128 x 128 weights. A 56x56 image would flatten to 6x6x32 = 1,152 values, for
# which there are no weights:

# %%
try:
    model(np.zeros((1, 56, 56, 1), dtype="float32"))
except Exception as exc:  # Keras says the shapes do not match
    print(type(exc).__name__, str(exc).splitlines()[0][:160])

# %% [markdown]
# A fully convolutional network replaces `Flatten` + `Dense` with convolutions: cnnlab's `fcn`
# preset turns the seed's Dense(128) into a 2x2 convolution and its Dense(10) into a 1x1
# convolution (the same 73,834 weights), so every position of a larger picture gets its own
# class scores, and a global max pooling keeps each class's best score, whatever the size.
# It trains with `RandomCanvas`, which puts each garment at a random spot on a 42x42 canvas,
# so it learns to find a garment anywhere (`cnnlab train --preset fcn`):

# %%
fcn_config = cnnlab.load_config(
    preset="fcn",
    overrides={
        "train.epochs": FCN_EPOCHS,
        "train.seed": 1,
        "data.limit": TRAIN_LIMIT,
        "run.runs_dir": str(RUNS_DIR),
        "run.name": "fcn",
    },
)
fcn = cnnlab.train(fcn_config, overwrite=True)
print(summary_text(fcn.model))

# %% [markdown]
# Its input is (None, None, 1): any height and width. A garment placed anywhere on a larger
# canvas is classified with `keep_size=True`, which feeds the whole picture at its own size
# instead of trimming and shrinking it to 28x28:

# %%
predictor = cnnlab.load_predictor(fcn.run_dir)
rng = np.random.default_rng(3)
hits = 0
for index in range(200):  # 200 test garments, each at a random spot on an 84x84 canvas
    canvas = np.zeros((84, 84), dtype=np.float32)
    top, left = rng.integers(0, 84 - 28, size=2)
    canvas[top : top + 28, left : left + 28] = splits.x_test[index, :, :, 0]
    [whole] = predictor.predict([canvas], keep_size=True)
    hits += whole.label == splits.class_names[int(splits.y_test[index])]
print(f"fcn on 84x84 canvases, garment anywhere: {hits / 200:.1%} of 200 test images right")
print(f"the same fcn on the 10,000 28x28 test images: {cnnlab.evaluate(fcn.run_dir)['test_accuracy']:.2%}")
