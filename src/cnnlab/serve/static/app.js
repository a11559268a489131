// cnnlab's page: draw or drop an image, see the prediction and what every layer saw.
// Everything comes from the JSON API (see /docs); no libraries, works offline. What the page
// says and offers follows the run's input (/api/model's `input`): a Fashion-MNIST-like run
// (the garment recipe) draws light on dark and shows the box where the garment was found; a
// run trained on a folder of photos takes pictures whole, as its training images were, and
// offers the drawing pad only where a drawing suits it (a one-channel model).
"use strict";

const BRUSH_WIDTH = 22; // canvas pixels of 280: about 2 of the model's 28
const THROTTLE_MS = 150; // at most one request per interval while drawing
const SHOWN_CLASSES = 5;

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const pen = canvas.getContext("2d", { willReadFrequently: true });

const state = {
  source: null, // null (nothing yet), "canvas", or a File
  maxUploadBytes: 10 * 2 ** 20,
  topK: SHOWN_CLASSES,
  generation: 0, // bumped by Clear: answers to older requests are dropped
  inFlight: false,
  pending: false,
  lastSent: 0,
  timer: null,
  analysed: null, // { blob, name }: the picture the shown maps came from
  maps: null, // the shown pictures by layer name (their shapes and tile grids)
  explained: null, // the cell whose arithmetic is open: { layer, row, col, channel }
  explainAsked: 0, // bumped per explain request: only the latest answer is shown
  drawing: true, // whether the drawing pad is offered (/api/model's input.drawing)
  idleText: "Draw something, or choose an image.",
  mapsText: "Draw or choose an image first.",
};

// --- Drawing ----------------------------------------------------------------------------

function clearCanvas() {
  pen.globalCompositeOperation = "source-over";
  pen.fillStyle = "#000";
  pen.fillRect(0, 0, canvas.width, canvas.height);
}

function canvasPoint(event) {
  const box = canvas.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * canvas.width) / box.width,
    y: ((event.clientY - box.top) * canvas.height) / box.height,
  };
}

function setUpDrawing() {
  pen.lineCap = "round";
  pen.lineJoin = "round";
  let last = null;

  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    if (state.source !== "canvas") {
      clearCanvas(); // a new drawing replaces an uploaded image
      showUpload(null);
      state.source = "canvas";
    }
    last = canvasPoint(event);
    stroke(last, last);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!last) return;
    event.preventDefault();
    // Coalesced events keep fast strokes smooth where the browser batches pointer moves.
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const each of events.length ? events : [event]) {
      const point = canvasPoint(each);
      stroke(last, point);
      last = point;
    }
  });
  const end = () => {
    if (!last) return;
    last = null;
    requestUpdate();
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
}

function stroke(from, to) {
  pen.strokeStyle = "#fff";
  pen.lineWidth = BRUSH_WIDTH;
  pen.beginPath();
  pen.moveTo(from.x, from.y);
  pen.lineTo(to.x, to.y);
  pen.stroke();
  requestUpdate();
}

// --- Files --------------------------------------------------------------------------------

function useFile(file) {
  if (!file) return;
  if (file.size > state.maxUploadBytes) {
    showError(`${file.name} is ${formatBytes(file.size)}; the limit is ${formatBytes(state.maxUploadBytes)}.`);
    return;
  }
  state.source = file;
  showUpload(file);
  requestUpdate();
}

function showUpload(file) {
  showBox(null);
  const preview = $("upload-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.removeAttribute("src");
  preview.hidden = !file;
  if (file) preview.src = URL.createObjectURL(file);
  $("drop-invite").hidden = state.drawing || Boolean(file);
}

function setUpFiles() {
  $("file").addEventListener("change", (event) => {
    useFile(event.target.files[0]);
    event.target.value = ""; // choosing the same file again still fires "change"
  });
  const zone = $("drop-zone");
  const card = $("try");
  zone.addEventListener("click", () => {
    if (!state.drawing) $("file").click(); // no pad to draw on: the zone chooses a file
  });
  card.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  card.addEventListener("dragleave", (event) => {
    if (!card.contains(event.relatedTarget)) zone.classList.remove("dragging");
  });
  card.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    useFile(event.dataTransfer.files[0]);
  });
  // A file dropped beside the card must not make the browser navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}

// --- Asking the server (throttled: one request in flight, the latest input wins) ---------

function requestUpdate() {
  state.pending = true;
  pump();
}

function pump() {
  if (!state.pending || state.inFlight || state.source === null) return;
  const wait = state.lastSent + THROTTLE_MS - performance.now();
  if (wait > 0) {
    state.timer ??= setTimeout(() => {
      state.timer = null;
      pump();
    }, wait);
    return;
  }
  state.pending = false;
  state.inFlight = true;
  state.lastSent = performance.now();
  const generation = state.generation;
  analyse(state.source)
    .then((answer) => {
      if (generation === state.generation) showAnswer(answer);
    })
    .catch((error) => {
      if (generation === state.generation) showError(error.message);
    })
    .finally(() => {
      state.inFlight = false;
      pump();
    });
}

async function analyse(source) {
  const blob = source === "canvas" ? await canvasBlob() : source;
  const form = new FormData();
  form.append("file", blob, source === "canvas" ? "drawing.png" : source.name);
  // An exported (ONNX) model has no layers to show: ask for the prediction only.
  const route = state.features === false ? "predict" : "features";
  const answer = await askJson(`/api/${route}?top_k=${state.topK}`, { method: "POST", body: form });
  state.analysed = { blob, name: form.get("file").name }; // what the explainer asks about
  return route === "features" ? answer : { prediction: answer, input: null, layers: [] };
}

function canvasBlob() {
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("cannot read the canvas"))), "image/png");
  });
}

// --- Showing answers ----------------------------------------------------------------------

function showAnswer(answer) {
  const { prediction } = answer;
  const status = $("status");
  status.classList.remove("error");
  if (prediction.blank) {
    status.textContent = state.input?.kind === "folder"
      ? "The model's input is all black."
      : "Nothing stands out from the background yet.";
  } else if (prediction.unsure) {
    // Below the confidence threshold `cnnlab evaluate` chose on validation data.
    status.replaceChildren("Not sure: maybe ", element("strong", {}, prediction.label));
    status.title = "low confidence after calibration: maybe not one of this model's classes";
  } else {
    status.replaceChildren("Looks like ", element("strong", {}, prediction.label));
  }
  if (!prediction.unsure) status.removeAttribute("title");
  showBars(prediction.top);
  showBox(state.source === "canvas" ? null : prediction.box);
  if (!answer.input) return;
  const input = $("input-image");
  input.src = answer.input.image;
  input.hidden = false;
  $("input-empty").hidden = true;
  showMaps(answer.input, answer.layers);
}

// The box where the garment was found (garment recipe only; a folder run's answers have no
// box), drawn over the chosen image (which is shown object-fit: contain, so the box is placed
// the same way), as percentages of the pad.
function showBox(box) {
  const outline = $("found-box");
  const preview = $("upload-preview");
  if (!box || preview.hidden) {
    outline.hidden = true;
    return;
  }
  if (!preview.complete || !preview.naturalWidth) {
    preview.addEventListener("load", () => showBox(box), { once: true });
    return;
  }
  const zone = $("drop-zone");
  const [width, height] = [zone.clientWidth, zone.clientHeight];
  const scale = Math.min(width / preview.naturalWidth, height / preview.naturalHeight);
  const offsetX = (width - preview.naturalWidth * scale) / 2;
  const offsetY = (height - preview.naturalHeight * scale) / 2;
  const [left, top, right, bottom] = box;
  outline.style.left = `${(100 * (offsetX + left * scale)) / width}%`;
  outline.style.top = `${(100 * (offsetY + top * scale)) / height}%`;
  outline.style.width = `${(100 * (right - left) * scale) / width}%`;
  outline.style.height = `${(100 * (bottom - top) * scale) / height}%`;
  outline.dataset.box = box.join(",");
  outline.hidden = false;
}

function showBars(top) {
  $("top").replaceChildren(
    ...top.map(({ class: name, probability }) => {
      const percent = (100 * probability).toFixed(1);
      const fill = element("div", { class: "fill" });
      fill.style.width = `${percent}%`;
      const item = element(
        "li",
        {},
        element("span", { class: "name", title: name }, name),
        element("div", { class: "track", role: "presentation" }, fill),
        element("span", { class: "value" }, `${percent}%`),
      );
      item.dataset.class = name;
      item.dataset.probability = String(probability);
      return item;
    }),
  );
}

function showMaps(input, layers) {
  const figures = [input, ...layers].map((layer) => {
    const [height, width, channels] = layer.shape;
    const shown = layer.shown_channels < channels ? `, first ${layer.shown_channels} shown` : "";
    const what = layer.kind === "input" ? "the model's input" : `${channels} channels${shown}`;
    const image = element("img", { src: layer.image, alt: `${layer.name}: ${what}` });
    if (EXPLAINED_KINDS.has(layer.kind)) makeExplorable(image, layer);
    return element(
      "figure",
      { "data-layer": layer.name },
      element("div", { class: "map-frame" }, image, element("div", { class: "map-marks", "aria-hidden": "true" })),
      element(
        "figcaption",
        {},
        element("b", {}, layer.name),
        ` ${layer.kind === "input" ? "" : layer.kind} · ${height}×${width}×${channels}`,
      ),
    );
  });
  $("maps").replaceChildren(...figures);
  state.maps = Object.fromEntries([input, ...layers].map((layer) => [layer.name, layer]));
  $("explain-hint").hidden = !layers.some((layer) => EXPLAINED_KINDS.has(layer.kind));
  if (state.explained) explainCell(state.explained); // an open explanation follows the new image
}

function showError(message) {
  const status = $("status");
  status.classList.add("error");
  status.textContent = message;
}

function resetResults() {
  state.generation += 1;
  state.pending = false;
  state.source = null;
  showUpload(null);
  const status = $("status");
  status.classList.remove("error");
  status.textContent = state.idleText;
  $("top").replaceChildren();
  $("input-image").hidden = true;
  $("input-image").removeAttribute("src");
  $("input-empty").hidden = false;
  $("maps").replaceChildren(element("p", { class: "muted" }, state.mapsText));
  hideExplanation();
  state.maps = null;
  $("explain-hint").hidden = true;
}

// What the page says and offers for this run's input. The garment recipe keeps the page as it
// was written for Fashion-MNIST; a folder run gets its own words, its colour, and the drawing
// pad only for a one-channel model.
function describeInput(input) {
  state.input = input;
  if (!input || input.kind !== "folder") return;
  const [height, width] = input.size;
  const colour = input.color === "rgb" ? "in colour" : "in grey";
  const how = `resized to ${width}×${height} (${input.resize}) ${colour}, as the training images were`;
  state.drawing = input.drawing !== false;
  $("canvas").hidden = !state.drawing;
  $("drop-zone").classList.toggle("photos", !state.drawing);
  $("drop-invite").hidden = state.drawing || state.source instanceof File;
  $("found-box").title = "";
  $("try-title").textContent = state.drawing ? "Draw or drop an image" : "Drop or choose an image";
  $("pad-hint").textContent = state.drawing
    ? `Draw, or drop any picture here: the whole picture is ${how}.`
    : `Drop any picture here, or choose one: the whole picture is ${how}.`;
  $("input-caption").textContent = `What the model received (${width}×${height}, ${colour})`;
  $("input-image").alt = `The ${width}×${height} input the model received, ${colour}`;
  state.idleText = state.drawing ? "Draw something, or choose an image." : "Choose an image, or drop one on the pad.";
  state.mapsText = state.drawing ? "Draw or choose an image first." : "Choose an image first.";
  if (state.source === null) {
    $("status").textContent = state.idleText;
    $("maps").replaceChildren(element("p", { class: "muted" }, state.mapsText));
  }
}

// --- The model and its run ----------------------------------------------------------------

async function loadModel() {
  const response = await fetch("/api/model");
  if (!response.ok) throw new Error(`/api/model answered ${response.status}`);
  const model = await response.json();
  state.maxUploadBytes = model.limits.max_upload_bytes;
  state.topK = Math.min(SHOWN_CLASSES, model.classes.length);
  $("model-name").textContent = model.name;
  state.features = model.features !== false;
  $("layers").hidden = !state.features;
  describeInput(model.input);
  const classes = $("model-classes");
  classes.textContent = `Classes: ${model.classes.join(", ")}`;
  classes.hidden = false;
  document.title = `cnnlab · ${model.name}`;
  const accuracy = model.metrics?.test_accuracy;
  $("model-facts").textContent = [
    `${model.classes.length} classes`,
    model.parameters == null ? "exported model" : `${model.parameters.toLocaleString()} parameters`,
    `input ${model.input_shape.join("×")}`,
    accuracy === undefined ? "not evaluated yet" : `${(100 * accuracy).toFixed(2)}% test accuracy`,
  ].join(" · ");
  showMetrics(model);
  showConfusion(model);
}

function showMetrics(model) {
  const { metrics, training } = model;
  const tiles = [];
  const tile = (label, value) =>
    tiles.push(element("div", { class: "metric" }, element("div", { class: "label" }, label), element("div", { class: "value" }, value)));
  if (metrics) {
    tile("test accuracy", `${(100 * metrics.test_accuracy).toFixed(2)}%`);
    tile("test loss", metrics.test_loss.toFixed(4));
    tile("test images", metrics.test_images.toLocaleString());
    if (metrics.ece != null) tile("calibration error (ECE)", metrics.ece.toFixed(4));
    if (metrics.ece_calibrated != null) tile("ECE after temperature", `${metrics.ece_calibrated.toFixed(4)} (T = ${metrics.temperature.toFixed(2)})`);
  }
  if (training) {
    if (training.best_epoch != null) tile("best epoch", `${training.best_epoch} of ${training.epochs_run}`);
    if (training.train_seconds != null) tile("training time", formatSeconds(training.train_seconds));
  }
  if (!tiles.length) tiles.push(element("p", { class: "muted" }, "No test metrics yet: run `cnnlab evaluate RUN`."));
  $("metrics").replaceChildren(...tiles);

  if (!metrics?.per_class) return;
  const percent = (value) => `${(100 * value).toFixed(1)}%`;
  const rows = metrics.per_class.map((row) =>
    element("tr", {}, ...[row.class, percent(row.precision), percent(row.recall), percent(row.f1), row.support].map((cell) => element("td", {}, String(cell)))),
  );
  const head = element("tr", {}, ...["class", "precision", "recall", "F1", "images"].map((cell) => element("th", { scope: "col" }, cell)));
  const table = element("table", {}, element("thead", {}, head), element("tbody", {}, ...rows));
  $("per-class").replaceChildren(element("details", {}, element("summary", {}, "Per-class test results"), element("div", { class: "table-wrap" }, table)));
}

// --- Mistakes you can open: the test set's confusion matrix and the images behind it --------
// Each non-zero cell is a button that opens its test images (GET /api/mistakes), as does
// "Biggest mistakes" (GET /api/top-losses); both answer from what `cnnlab evaluate` recorded,
// so nothing is predicted again. A run evaluated before that was recorded shows the matrix only.

const MISTAKES_SHOWN = 24;
const mistakes = { request: 0, pixelated: false };

function showConfusion(model) {
  const metrics = model.metrics;
  if (!metrics?.confusion_matrix) {
    $("confusion").replaceChildren();
    return;
  }
  const names = metrics.class_names;
  const open = model.mistakes === true;
  mistakes.pixelated = Math.max(...model.input_shape.slice(0, 2)) <= 32; // e.g. 28x28 grey
  const head = element(
    "tr",
    {},
    element("th", { scope: "col" }, "true ↓ · predicted →"),
    ...names.map((name) => element("th", { scope: "col" }, name)),
  );
  const rows = metrics.confusion_matrix.map((row, truth) => {
    const total = row.reduce((sum, count) => sum + count, 0);
    const cells = row.map((count, guess) => confusionCell(names, truth, guess, count, total, open));
    return element("tr", {}, element("th", { scope: "row" }, names[truth]), ...cells);
  });
  const caption = "Confusion matrix of the test set: a row per true class, a column per predicted class; "
    + "shaded by the share of the row" + (open ? ". Choose a number to see those test images." : ".");
  const table = element("table", { class: "confusion" }, element("caption", {}, caption), element("thead", {}, head), element("tbody", {}, ...rows));
  const parts = [element("div", { class: "table-wrap" }, table)];
  if (open) {
    const button = element("button", { type: "button", id: "top-losses", "aria-pressed": "false" }, "Biggest mistakes (top losses)");
    button.addEventListener("click", () =>
      openMistakes(button, `/api/top-losses?limit=${MISTAKES_SHOWN}`, "The test images with the highest loss"),
    );
    parts.push(element("div", { class: "buttons" }, button));
  } else {
    parts.push(element("p", { class: "muted small" }, "Run `cnnlab evaluate RUN` again to open mistakes."));
  }
  $("confusion").replaceChildren(...parts);
}

function confusionCell(names, truth, guess, count, total, open) {
  const share = total ? count / total : 0;
  const cell = element("td", { class: truth === guess ? "diagonal" : "off" });
  cell.style.setProperty("--share", share.toFixed(3));
  const label = `true ${names[truth]}, predicted ${names[guess]}: ${count} of ${total} (${(100 * share).toFixed(1)}%)`;
  if (!open || count === 0) {
    cell.append(element("span", { title: label }, String(count)));
    return cell;
  }
  const button = element("button", { type: "button", title: label, "aria-label": label, "aria-pressed": "false" }, String(count));
  button.dataset.true = names[truth];
  button.dataset.predicted = names[guess];
  const query = new URLSearchParams({ true: names[truth], predicted: names[guess], limit: MISTAKES_SHOWN });
  button.addEventListener("click", () =>
    openMistakes(button, `/api/mistakes?${query}`, `true ${names[truth]} · predicted ${names[guess]}`),
  );
  cell.append(button);
  return cell;
}

async function openMistakes(button, url, title) {
  const request = ++mistakes.request; // a later click wins over an answer still on its way
  for (const other of $("confusion").querySelectorAll("[aria-pressed]")) other.setAttribute("aria-pressed", "false");
  button.setAttribute("aria-pressed", "true");
  $("mistakes").hidden = false;
  $("mistakes-title").textContent = title;
  $("mistakes-count").textContent = "Loading…";
  $("mistakes-grid").replaceChildren();
  try {
    const answer = await askJson(url);
    if (request === mistakes.request) showMistakes(answer);
  } catch (error) {
    if (request === mistakes.request) $("mistakes-count").textContent = error.message;
  }
}

function showMistakes(answer) {
  const shown = answer.images.length;
  $("mistakes-count").textContent = shown === answer.count
    ? `showing all ${shown}`
    : `showing ${shown} of ${answer.count.toLocaleString()}`;
  const figures = answer.images.map((item) => {
    const caption = `true ${item.true} · predicted ${item.predicted} · ${(100 * item.probability).toFixed(1)}%`;
    const top = item.top.map(({ class: name, probability }) => `${name} ${(100 * probability).toFixed(1)}%`);
    const image = element("img", { src: item.image, alt: `Test image ${item.index}: ${caption}` });
    if (mistakes.pixelated) image.classList.add("pixelated");
    const figure = element("figure", { class: item.true === item.predicted ? "right" : "wrong" }, image, element("figcaption", {}, caption));
    figure.title = [`test image ${item.index}`, item.path, `loss ${item.loss.toFixed(3)}`, top.join(", ")].filter(Boolean).join(" · ");
    figure.dataset.index = String(item.index);
    return figure;
  });
  $("mistakes-grid").replaceChildren(...figures);
}

async function loadSummary() {
  const response = await fetch("/api/summary");
  $("summary").textContent = response.ok ? await response.text() : "No summary available.";
}

function loadPictures() {
  const missing = { "model-picture": "drawing of the model", "history-picture": "training history" };
  for (const [id, what] of Object.entries(missing)) {
    const picture = $(id);
    picture.addEventListener("error", () => {
      picture.closest("figure").replaceChildren(element("p", { class: "muted" }, `No ${what} is available for this run.`));
    });
    picture.src = picture.dataset.src; // set after the listener, so a 404 is never missed
  }
}

// --- How one output was computed (POST /api/explain/cell) --------------------------------
// A click on a cell of a conv or pooling layer's map (or Enter on a focused map) asks for that
// cell's arithmetic on the image the maps came from, and shows it: the window it read outlined
// on the previous layer's map, and per input channel the patch, the kernel and their products,
// then the bias, the sum and the activation, beside the value Keras itself computed.

const EXPLAINED_KINDS = new Set(["Conv2D", "MaxPooling2D", "AveragePooling2D"]);
const SHOWN_INPUT_CHANNELS = 4; // a wide layer's first input channels get their tables
const DIGITS = 4;
const ARROWS = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };

const fixed = (value) => value.toFixed(DIGITS);

// A picture's tiles (serve.service.feature_grid_png): one height x width tile per channel,
// `columns` per row, 1 transparent pixel between tiles; the input picture is one tile.
function tiles(layer) {
  const [height, width] = layer.shape;
  const count = layer.kind === "input" ? 1 : layer.shown_channels;
  const columns = layer.kind === "input" ? 1 : layer.columns;
  const rows = Math.ceil(count / columns);
  return { height, width, count, columns, gridWidth: columns * (width + 1) - 1, gridHeight: rows * (height + 1) - 1 };
}

function cellAt(image, layer, event) {
  const grid = tiles(layer);
  const x = Math.floor((event.offsetX * grid.gridWidth) / image.clientWidth);
  const y = Math.floor((event.offsetY * grid.gridHeight) / image.clientHeight);
  const [col, row] = [x % (grid.width + 1), y % (grid.height + 1)];
  const channel = Math.floor(y / (grid.height + 1)) * grid.columns + Math.floor(x / (grid.width + 1));
  if (col >= grid.width || row >= grid.height || channel >= grid.count) return null; // a gap
  return { layer: layer.name, row, col, channel };
}

// The arrow keys walk the cells of all tiles as one grid: past a tile's edge is the next channel.
function moveCursor(layer, cell, [down, right]) {
  const grid = tiles(layer);
  const rows = Math.ceil(grid.count / grid.columns);
  const clamp = (value, top) => Math.min(Math.max(value, 0), top - 1);
  const x = clamp((cell.channel % grid.columns) * grid.width + cell.col + right, grid.columns * grid.width);
  const y = clamp(Math.floor(cell.channel / grid.columns) * grid.height + cell.row + down, rows * grid.height);
  const channel = Math.floor(y / grid.height) * grid.columns + Math.floor(x / grid.width);
  if (channel >= grid.count) return cell;
  return { layer: layer.name, row: y % grid.height, col: x % grid.width, channel };
}

function makeExplorable(image, layer) {
  const [height, width] = layer.shape;
  let cursor = { layer: layer.name, row: Math.floor(height / 2), col: Math.floor(width / 2), channel: 0 };
  image.tabIndex = 0;
  image.classList.add("explorable");
  image.alt += ". Click a cell, or move with the arrow keys and press Enter, to see how it was computed";
  image.addEventListener("click", (event) => {
    const cell = cellAt(image, layer, event);
    if (!cell) return;
    cursor = cell;
    markCells(layer.name, "cursor", [[cell.channel, cell.row, cell.row + 1, cell.col, cell.col + 1]]);
    explainCell(cell);
  });
  image.addEventListener("focus", () => markCells(layer.name, "cursor", [[cursor.channel, cursor.row, cursor.row + 1, cursor.col, cursor.col + 1]]));
  image.addEventListener("blur", () => markCells(layer.name, "cursor", []));
  image.addEventListener("keydown", (event) => {
    if (ARROWS[event.key]) {
      event.preventDefault();
      cursor = moveCursor(layer, cursor, ARROWS[event.key]);
      markCells(layer.name, "cursor", [[cursor.channel, cursor.row, cursor.row + 1, cursor.col, cursor.col + 1]]);
    } else if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      explainCell(cursor);
    }
  });
}

// Outlines over a layer's picture: each box is [channel, top, bottom, left, right) in its map's
// cells, clipped to the map; the outlines of this kind drawn before are replaced.
function markCells(name, kind, boxes) {
  const figure = document.querySelector(`#maps figure[data-layer="${CSS.escape(name)}"]`);
  if (!figure || !state.maps?.[name]) return false;
  const grid = tiles(state.maps[name]);
  const marks = figure.querySelector(".map-marks");
  for (const old of marks.querySelectorAll(`.${kind}`)) old.remove();
  for (const [channel, top, bottom, left, right] of boxes) {
    if (channel >= grid.count) continue;
    const [y0, y1] = [Math.max(top, 0), Math.min(bottom, grid.height)];
    const [x0, x1] = [Math.max(left, 0), Math.min(right, grid.width)];
    const tileLeft = (channel % grid.columns) * (grid.width + 1);
    const tileTop = Math.floor(channel / grid.columns) * (grid.height + 1);
    const mark = element("div", { class: `mark ${kind}` });
    mark.style.left = `${(100 * (tileLeft + x0)) / grid.gridWidth}%`;
    mark.style.top = `${(100 * (tileTop + y0)) / grid.gridHeight}%`;
    mark.style.width = `${(100 * (x1 - x0)) / grid.gridWidth}%`;
    mark.style.height = `${(100 * (y1 - y0)) / grid.gridHeight}%`;
    marks.append(mark);
  }
  return true;
}

async function explainCell(cell) {
  if (!state.analysed || !state.maps?.[cell.layer]) return;
  state.explained = cell;
  const asked = ++state.explainAsked; // the latest click wins
  const form = new FormData();
  form.append("file", state.analysed.blob, state.analysed.name);
  const query = new URLSearchParams({ layer: cell.layer, row: cell.row, col: cell.col, channel: cell.channel });
  const panel = $("explain");
  try {
    const answer = await askJson(`/api/explain/cell?${query}`, { method: "POST", body: form });
    if (asked === state.explainAsked) showExplanation(answer);
  } catch (error) {
    if (asked !== state.explainAsked) return;
    panel.replaceChildren(element("p", { class: "error" }, `Cannot explain this cell: ${error.message}`));
    panel.hidden = false;
  }
}

function showExplanation(answer) {
  const { layer, row, col, channel, rows, cols, previous } = answer;
  for (const figure of document.querySelectorAll("#maps figure")) {
    markCells(figure.dataset.layer, "chosen", []);
    markCells(figure.dataset.layer, "window", []);
  }
  markCells(layer, "chosen", [[channel, row, row + 1, col, col + 1]]);
  // A conv reads the window in every input channel; pooling in its own channel only.
  const channels = answer.kind === "Conv2D" ? [...Array(answer.previous_shape[2]).keys()] : [channel];
  const drawn = markCells(previous, "window", channels.map((each) => [each, rows[0], rows[1], cols[0], cols[1]]));
  const [height, width] = answer.previous_shape;
  const where = `It read rows ${Math.max(rows[0], 0)}–${Math.min(rows[1], height) - 1} and columns ` +
    `${Math.max(cols[0], 0)}–${Math.min(cols[1], width) - 1} of ${previous === "input" ? "the model's input" : previous}` +
    ` (${height}×${width})${drawn ? ", outlined above" : " (not drawn here)"}.`;
  const padded = answer.padding.flat().some(Boolean);
  const paddingNote = answer.kind === "Conv2D"
    ? "Cells shown as · lie outside the map: 'same' padding reads them as 0."
    : "Cells shown as · lie outside the map: 'same' padding leaves them out.";
  const close = element("button", { type: "button", class: "close" }, "Close");
  close.addEventListener("click", hideExplanation);
  const panel = $("explain");
  panel.replaceChildren(
    element("div", { class: "explain-head" }, element("h3", {}, `${layer} · row ${row}, column ${col}, channel ${channel}`), close),
    element("p", {}, answer.explanation, " ", where, padded ? ` ${paddingNote}` : ""),
    answer.kind === "Conv2D" ? convArithmetic(answer) : poolingArithmetic(answer),
    verdict(answer),
  );
  panel.dataset.layer = layer;
  panel.hidden = false;
}

function convArithmetic(answer) {
  const shown = answer.inputs.slice(0, SHOWN_INPUT_CHANNELS);
  const blocks = shown.map((input) =>
    element(
      "div",
      { class: "channel-sum" },
      element("h4", {}, `input channel ${input.channel}`),
      element(
        "div",
        { class: "terms" },
        numberTable("input", input.patch, answer.padding),
        element("span", { class: "op" }, "×"),
        numberTable("kernel", input.kernel),
        element("span", { class: "op" }, "="),
        numberTable("products", input.products, answer.padding),
        element("span", { class: "op" }, "→ sum"),
        element("b", { "data-role": "channel-sum" }, fixed(input.sum)),
      ),
    ),
  );
  const parts = [...blocks];
  const sums = answer.inputs.map((input) => input.sum);
  if (answer.inputs.length > shown.length) {
    parts.push(
      element("p", { class: "muted small" }, `The first ${shown.length} of ${answer.inputs.length} input channels are shown; every channel's sum:`),
      element("ul", { class: "sums" }, ...sums.map((sum, index) => element("li", {}, `channel ${index}: ${fixed(sum)}`))),
    );
  }
  const products = sums.reduce((total, sum) => total + sum, 0);
  const activated = answer.activation === "linear"
    ? "no activation"
    : `${answer.activation}(${fixed(answer.total)}) = ${fixed(answer.value)}`;
  parts.push(
    element(
      "p",
      { class: "total" },
      `Sum of all products ${fixed(products)} + bias ${fixed(answer.bias)} = `,
      element("b", { "data-role": "total" }, fixed(answer.total)),
      ` (before the activation); ${activated}.`,
    ),
  );
  return element("div", { class: "arithmetic" }, ...parts);
}

function poolingArithmetic(answer) {
  const values = answer.window.flat().filter((value) => value !== null);
  const largest = Math.max(...values);
  const marked = answer.operation === "max" ? answer.window.flat().indexOf(largest) : -1;
  const table = numberTable("window", answer.window.map((row) => row.map((value) => value ?? 0)), answer.padding, marked);
  const rule = answer.operation === "max" ? "the largest of the window" : `the mean of its ${values.length} values`;
  return element(
    "div",
    { class: "arithmetic" },
    element("div", { class: "terms" }, table),
    element("p", { class: "total" }, `${rule[0].toUpperCase()}${rule.slice(1)}: `, element("b", { "data-role": "total" }, fixed(answer.total)), "."),
  );
}

function verdict(answer) {
  const why = answer.dtype === "float32"
    ? "float32 adds in another order"
    : `this model computes in ${answer.dtype}, which keeps about 3 significant digits`;
  const agreement = answer.agrees ? "they agree within" : "they differ by more than";
  return element(
    "p",
    { class: `verdict ${answer.agrees ? "agrees" : "differs"}` },
    "This output: ",
    element("b", { "data-role": "value" }, fixed(answer.value)),
    " · Keras computed: ",
    element("b", { "data-role": "keras" }, fixed(answer.keras_value)),
    ` · ${agreement} ${answer.tolerance.toPrecision(2)} (${why}).`,
  );
}

// A small table of numbers; `padding` marks cells outside the map (shown as ·), `marked` the
// index (row by row) of one cell to highlight.
function numberTable(label, values, padding = null, marked = -1) {
  let index = 0;
  const rows = values.map((row, r) =>
    element(
      "tr",
      {},
      ...row.map((value, c) => {
        const outside = padding?.[r]?.[c];
        const cell = element("td", {}, outside ? "·" : fixed(value));
        if (outside) cell.classList.add("pad");
        if (index++ === marked) cell.classList.add("max");
        return cell;
      }),
    ),
  );
  return element("table", { class: "numbers", "aria-label": label }, element("caption", {}, label), element("tbody", {}, ...rows));
}

function hideExplanation() {
  state.explained = null;
  state.explainAsked += 1; // an answer on its way is dropped
  $("explain").hidden = true;
  $("explain").replaceChildren();
  for (const figure of document.querySelectorAll("#maps figure")) {
    markCells(figure.dataset.layer, "chosen", []);
    markCells(figure.dataset.layer, "window", []);
  }
}

// --- Helpers ------------------------------------------------------------------------------

// A JSON answer from the API; an error answer throws its one-line `detail`.
async function askJson(url, options = {}) {
  const response = await fetch(url, options);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.detail || `the server answered ${response.status}`);
  return answer;
}

function element(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

function formatBytes(size) {
  if (size >= 2 ** 20) return `${(size / 2 ** 20).toFixed(1)} MiB`;
  if (size >= 2 ** 10) return `${(size / 2 ** 10).toFixed(1)} KiB`;
  return `${size} bytes`;
}

function formatSeconds(seconds) {
  const minutes = Math.floor(seconds / 60);
  return minutes ? `${minutes} min ${Math.round(seconds % 60)} s` : `${seconds.toFixed(1)} s`;
}

// --- Start ----------------------------------------------------------------------------------

clearCanvas();
setUpDrawing();
setUpFiles();
loadPictures();
$("clear").addEventListener("click", () => {
  clearCanvas();
  resetResults();
});
loadModel().catch((error) => showError(`Cannot load the model: ${error.message}`));
loadSummary().catch(() => {});
