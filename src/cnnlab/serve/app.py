"""`cnnlab serve RUN`: a web page and a JSON API over one trained run (FastAPI on uvicorn).

    app = create_app("runs/basic_cnn-fashion_mnist")    # loads the model, or raises CnnlabError
    serve("runs/basic_cnn-fashion_mnist", port=8000)    # the same, served until Ctrl-C

The page (`static/`) draws, uploads and shows what the model saw; everything it shows comes from
the API below, documented at /docs. Bad requests get a 4xx with `{"detail": "<message>"}` (see
`cnnlab.serve.inputs` for which); the server keeps serving. Predictions are the predictor's own
(`Predictor.predict`, `KerasPredictor.features`, the same as the CLI's and Python's): this module
only reads requests and turns the results into HTTP answers.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from cnnlab._version import __version__
from cnnlab.data.images import MAX_PIXELS
from cnnlab.errors import CnnlabError, ImageError
from cnnlab.prediction.arithmetic import UnknownLayer
from cnnlab.prediction.inference import KerasPredictor
from cnnlab.prediction.predictor import Prediction
from cnnlab.serve import inputs
from cnnlab.serve.limits import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HOST,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_PORT,
    DEFAULT_TOP_K,
    MAX_BATCH_FILES,
)
from cnnlab.serve.schemas import (
    BATCH_BODY,
    ERRORS,
    IMAGE_BODY,
    MISTAKE_ERRORS,
    MISTAKES_LIMIT,
    BatchItem,
    BatchOut,
    CellArithmeticOut,
    CellChannel,
    CellClass,
    CellCol,
    CellLayer,
    CellRow,
    ClassProbability,
    FeaturesOut,
    Health,
    InputInfo,
    KeepSize,
    LayerInfo,
    Limit,
    Limits,
    ModelInfo,
    OutcomeOut,
    OutcomesOut,
    Picture,
    PredictionOut,
    TopK,
)
from cnnlab.serve.service import (
    MAX_FEATURE_CHANNELS,
    PICTURES,
    ModelService,
    NeedsKeras,
    data_url,
    feature_grid_png,
    input_png,
    thumbnail_png,
)
from cnnlab.visualize.mistakes import MissingTestData, NoTestPredictions, Outcomes, UnknownClass

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")


# --- The app ---------------------------------------------------------------------------------


def create_app(
    run: str | Path,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    top_k: int = DEFAULT_TOP_K,
    onnx: bool = False,
    unsafe: bool = False,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    keep_size: bool = False,
) -> FastAPI:
    """The web app for a run folder (or .keras file); raises CnnlabError if it cannot be loaded.

    An .onnx file, or `onnx=True` with a run folder (its model.onnx), serves the exported model
    on ONNX Runtime without TensorFlow; /api/features then answers 501. `unsafe` loads a model
    file that holds Python code (see `cnnlab.runs.Run.load_model`). A request body that takes
    longer than `body_timeout_s` to arrive is answered 408 and its connection closed. With
    `keep_size`, a fully convolutional model sees each picture at its own size unless a request
    says otherwise (`?keep_size=false`); a model with a fixed input size refuses it here.
    """
    if max_upload_bytes < 1 or top_k < 1 or not body_timeout_s > 0:
        raise CnnlabError("max_upload_bytes, top_k and body_timeout_s must be positive")
    service = ModelService(run, top_k=top_k, onnx=onnx, unsafe=unsafe)
    if keep_size:
        service.predictor.check_keep_size()
    app = FastAPI(
        title="cnnlab",
        version=__version__,
        summary=f"Predict with {service.model_name} and see what its layers saw.",
    )
    app.state.service = service
    app.state.max_upload_bytes = max_upload_bytes
    app.state.keep_size = keep_size
    app.add_middleware(inputs.BodySizeLimit, max_bytes=max_upload_bytes)
    app.add_middleware(inputs.BodyDeadline, seconds=body_timeout_s)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(CnnlabError, _cnnlab_error)
    app.add_exception_handler(Exception, _unexpected_error)
    _add_routes(app)
    _add_mistake_routes(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    log.info("loaded %s (%s, %s)", service.model_name, run, service.predictor.backend)
    return app


def serve(
    run: str | Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    log_level: str = "info",
    **app_options: Any,
) -> None:
    """Serve `create_app(run, **app_options)` with uvicorn until interrupted."""
    import uvicorn

    app = create_app(run, **app_options)  # a bad run fails here, before the port is taken
    if not is_loopback(host):
        log.warning(
            "serving on %s: the page and API have no authentication, so anyone who can reach "
            "this machine on port %d can use them; use --host 127.0.0.1 unless that is what "
            "you want",
            host,
            port,
        )
    shown = f"[{host}]" if ":" in host else host
    log.info("serving %s on http://%s:%d/ (API docs: /docs)", run, shown, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def is_loopback(host: str) -> bool:
    """True when `host` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in {"localhost", "localhost."}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any address
        return False


def _add_routes(app: FastAPI) -> None:
    # Routes are defined in a function so that each app built by create_app has its own.
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/api/health", tags=["service"])
    def health(request: Request) -> Health:
        """Liveness: answers as long as the server runs."""
        return Health(model=_service(request).model_name)

    @app.get("/api/model", tags=["model"])
    def model_info(request: Request) -> ModelInfo:
        """The model's name, classes, input shape and layers, and the run's test metrics."""
        service = _service(request)
        return ModelInfo(
            name=service.model_name,
            run=str(service.run_dir),
            backend=service.predictor.backend,
            features=service.keras,
            keep_size=request.app.state.keep_size,
            classes=service.class_names,
            input=InputInfo(**service.input_info),
            input_shape=list(service.predictor.input_shape),
            parameters=service.parameters,
            layers=[LayerInfo(**layer) for layer in service.layers],
            top_k=service.top_k,
            limits=Limits(
                max_upload_bytes=request.app.state.max_upload_bytes,
                max_pixels=MAX_PIXELS,
                max_batch_files=MAX_BATCH_FILES,
            ),
            metrics=service.metrics(),
            training=service.training(),
            mistakes=service.run.test_predictions_file.is_file(),
        )

    @app.get("/api/summary", tags=["model"], response_class=PlainTextResponse)
    def summary(request: Request) -> str:
        """The model's Keras summary, as `cnnlab summary RUN` prints it."""
        return _service(request).summary

    @app.get(
        "/api/pictures/{name}.png",
        tags=["model"],
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, 404: {"description": "not available"}},
    )
    def picture(name: str, request: Request) -> Response:
        """The model's layered drawing (`model`) or the training curves (`history`), as PNG."""
        if name not in PICTURES:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no picture {name!r}; try model.png")
        try:
            png = _service(request).picture(name)
        except CnnlabError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.post("/api/predict", tags=["predict"], openapi_extra=IMAGE_BODY, responses=ERRORS)
    async def predict(
        request: Request, top_k: TopK = None, keep_size: KeepSize = None
    ) -> PredictionOut:
        """Top-k classes for one image: a file in the form field `file`, or JSON pixels."""
        service = _service(request)
        whole = _keep_size(request, keep_size)
        image = await _read_image(request)
        return await run_in_threadpool(_predict_one, service, image, top_k, whole)

    @app.post("/api/predict/batch", tags=["predict"], openapi_extra=BATCH_BODY, responses=ERRORS)
    async def predict_batch(
        request: Request, top_k: TopK = None, keep_size: KeepSize = None
    ) -> BatchOut:
        """Top-k classes for several files (form field `files`); a bad file gets an error."""
        service = _service(request)
        whole = _keep_size(request, keep_size)
        items = await inputs.read_batch(
            request, MAX_BATCH_FILES, request.app.state.max_upload_bytes
        )
        return await run_in_threadpool(_predict_batch, service, items, top_k, whole)

    @app.post("/api/features", tags=["predict"], openapi_extra=IMAGE_BODY, responses=ERRORS)
    async def features(
        request: Request, top_k: TopK = None, keep_size: KeepSize = None
    ) -> FeaturesOut:
        """The prediction, the preprocessed input, and every conv/pooling layer's feature maps."""
        service = _service(request)
        predictor = _keras_predictor(service, "feature maps need")
        whole = _keep_size(request, keep_size)
        image = await _read_image(request)
        return await run_in_threadpool(
            _features, predictor, image, service.top_k_for(top_k), whole, service.colour_input
        )

    @app.post(
        "/api/explain/cell",
        tags=["predict"],
        response_model_exclude_none=True,  # a conv's fields or a pooling layer's, not both
        openapi_extra=IMAGE_BODY,
        responses={
            **ERRORS,
            404: {"description": "no layer of that name"},
            501: {"description": "an exported (ONNX) model: no layers to read"},
        },
    )
    async def explain_cell(
        request: Request,
        layer: CellLayer,
        row: CellRow,
        col: CellCol,
        channel: CellChannel,
        keep_size: KeepSize = None,
    ) -> CellArithmeticOut:
        """How one cell of a conv or pooling layer's feature map was computed for this image:
        the input patch, kernel, products, bias, sum and activation (or the pooling window),
        with the value Keras computed beside it. The image is read as in /api/features."""
        predictor = _keras_predictor(_service(request), "explaining a layer's arithmetic needs")
        whole = _keep_size(request, keep_size)
        image = await _read_image(request)
        return await run_in_threadpool(
            _explain_cell, predictor, image, (layer, row, col, channel), whole
        )


def _add_mistake_routes(app: FastAPI) -> None:
    """The test images behind the confusion matrix, from what `cnnlab evaluate` recorded."""

    @app.get("/api/mistakes", tags=["test results"], responses=MISTAKE_ERRORS)
    def mistakes(
        request: Request,
        true_class: Annotated[CellClass, Query(alias="true")],
        predicted: CellClass,
        limit: Limit = MISTAKES_LIMIT,
        top_k: TopK = None,
    ) -> OutcomesOut:
        """The test images of one confusion-matrix cell, with its count: class `true` predicted
        as `predicted`, the most confident mistakes first; the same class twice: its correct
        ones, the least sure first."""
        service = _service(request)
        with _mistake_errors():
            outcomes = service.outcomes()
            chosen = outcomes.cell(true_class, predicted)
            true_name, predicted_name = (
                outcomes.class_names[outcomes.class_index(name)] for name in (true_class, predicted)
            )
            return _outcomes_out(service, outcomes, chosen, limit, top_k, true_name, predicted_name)

    @app.get("/api/top-losses", tags=["test results"], responses=MISTAKE_ERRORS)
    def top_losses(
        request: Request, limit: Limit = MISTAKES_LIMIT, top_k: TopK = None
    ) -> OutcomesOut:
        """The test images with the highest loss (-log p of the true class): the model's most
        confident mistakes first."""
        service = _service(request)
        with _mistake_errors():
            outcomes = service.outcomes()
            return _outcomes_out(service, outcomes, outcomes.top_losses(), limit, top_k)


@contextlib.contextmanager
def _mistake_errors() -> Iterator[None]:
    """What cannot be shown, as HTTP: an unknown class or no recorded predictions 404, test
    images that cannot be read 409."""
    try:
        yield
    except (NoTestPredictions, UnknownClass) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except MissingTestData as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None


def _outcomes_out(
    service: ModelService,
    outcomes: Outcomes,
    positions: np.ndarray,
    limit: int,
    top_k: int | None,
    true: str | None = None,
    predicted: str | None = None,
) -> OutcomesOut:
    shown = positions[:limit]
    names = outcomes.class_names
    k = min(service.top_k_for(top_k), len(names))
    images = []
    for position, pixels in zip(shown, outcomes.pictures(shown), strict=True):
        outcome = outcomes.image(int(position))
        p = outcome.probabilities
        top = np.argsort(-p, kind="stable")[:k]
        images.append(
            OutcomeOut(
                index=outcome.index,
                path=outcome.path,
                true=names[outcome.label],
                predicted=names[outcome.predicted],
                probability=float(p[outcome.predicted]),
                true_probability=float(p[outcome.label]),
                loss=outcome.loss,
                top=[ClassProbability(class_name=names[c], probability=float(p[c])) for c in top],
                image=data_url(thumbnail_png(pixels)),
            )
        )
    return OutcomesOut(true=true, predicted=predicted, count=len(positions), images=images)


def _service(request: Request) -> ModelService:
    service: ModelService = request.app.state.service
    return service


def _keras_predictor(service: ModelService, what: str) -> KerasPredictor:
    """The service's Keras predictor; 501 where it runs an exported ONNX model (`what` with
    its verb, e.g. "feature maps need")."""
    try:
        return service.keras_predictor(what)
    except NeedsKeras as exc:
        raise HTTPException(status.HTTP_501_NOT_IMPLEMENTED, str(exc)) from None


def _keep_size(request: Request, asked: bool | None) -> bool:
    """Whether this request's picture keeps its size; 400 if the model cannot take that."""
    keep = request.app.state.keep_size if asked is None else asked
    if keep:
        try:
            _service(request).predictor.check_keep_size()
        except CnnlabError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    return bool(keep)


async def _read_image(request: Request) -> inputs.ImageInput:
    return await inputs.read_image(
        request, _service(request).predictor.size, request.app.state.max_upload_bytes
    )


# --- Blocking work (run in the thread pool) ------------------------------------------------


def _predict_one(
    service: ModelService, image: inputs.ImageInput, top_k: int | None, keep_size: bool = False
) -> PredictionOut:
    """The predictor's answer for one request's image; its error (a truncated or corrupt
    image, a size keep_size cannot take) is a 422."""
    (prediction,) = _predict(service, [image], top_k, keep_size)
    if prediction.error is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, prediction.error)
    return _prediction_out(prediction)


def _predict_batch(
    service: ModelService,
    items: list[inputs.ImageInput | inputs.Refused],
    top_k: int | None,
    keep_size: bool = False,
) -> BatchOut:
    """Each file's answer in its place: a refused file's status, a bad picture's 422, or its
    prediction (the good ones predicted together, as `Predictor.predict` does)."""
    good = [item for item in items if isinstance(item, inputs.ImageInput)]
    predictions = iter(_predict(service, good, top_k, keep_size))
    out = []
    for item in items:
        if isinstance(item, inputs.Refused):
            out.append(BatchItem(source=item.source, error=item.detail, status=item.status))
            continue
        prediction = next(predictions)
        if prediction.error is not None:
            out.append(BatchItem(source=prediction.source, error=prediction.error, status=422))
        else:
            out.append(BatchItem(**_prediction_out(prediction).model_dump()))
    return BatchOut(predictions=out)


def _predict(
    service: ModelService, images: list[inputs.ImageInput], top_k: int | None, keep_size: bool
) -> list[Prediction]:
    return service.predictor.predict(
        [image.opened() for image in images],
        service.top_k_for(top_k),
        keep_size=keep_size,
        sources=[image.source for image in images],
    )


def _features(
    predictor: KerasPredictor,
    image: inputs.ImageInput,
    top_k: int,
    keep_size: bool = False,
    colour: bool = False,
) -> FeaturesOut:
    """The predictor's features for one request's image as the page draws them (`colour`: the
    model reads colour, so its input is shown in colour and has no grey `pixels`)."""
    try:
        found = predictor.features(image.opened(), top_k, keep_size=keep_size, source=image.source)
    except ImageError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    pictures = []
    for name, kind, maps in found.layers:
        png, columns = feature_grid_png(maps)
        pictures.append(_picture(name, kind, maps.shape, columns, png))
    model_input = found.model_input
    return FeaturesOut(
        prediction=_prediction_out(found.prediction),
        input=_picture("input", "input", model_input.shape, 1, input_png(model_input)),
        pixels=None if colour else np.round(model_input[:, :, 0], 4).tolist(),
        layers=pictures,
    )


def _explain_cell(
    predictor: KerasPredictor,
    image: inputs.ImageInput,
    cell: tuple[str, int, int, int],
    keep_size: bool = False,
) -> CellArithmeticOut:
    """The predictor's arithmetic of one cell for one request's image: an unknown layer is a
    404; another kind of layer, a position outside its map or an unusable image a 422."""
    try:
        found = predictor.explain_cell(
            image.opened(), *cell, keep_size=keep_size, source=image.source
        )
    except UnknownLayer as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except CnnlabError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    return CellArithmeticOut(**found.to_dict())


def _picture(name: str, kind: str, shape: tuple[int, ...], columns: int, png: bytes) -> Picture:
    channels = int(shape[-1])
    return Picture(
        name=name,
        kind=kind,
        shape=[int(size) for size in shape],
        columns=columns,
        shown_channels=min(channels, MAX_FEATURE_CHANNELS),
        image=data_url(png),
    )


def _prediction_out(prediction: Prediction) -> PredictionOut:
    return PredictionOut(
        source=prediction.source,
        label=prediction.label,
        top=[ClassProbability(class_name=c, probability=p) for c, p in prediction.top],
        blank=prediction.blank,
        box=None if prediction.box is None else list(prediction.box),
        unsure=prediction.unsure,
    )


# --- Errors ----------------------------------------------------------------------------------


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's validation errors (e.g. a bad ?top_k) as one readable line."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = "; ".join(
        f"{' '.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', '')}"
        for error in errors
    )
    return JSONResponse(
        {"detail": detail or "invalid request"}, status.HTTP_422_UNPROCESSABLE_CONTENT
    )


async def _cnnlab_error(request: Request, exc: Exception) -> JSONResponse:
    """A cnnlab error that escaped the routes' own checks is still the client's image's fault."""
    return JSONResponse({"detail": str(exc)}, status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug: logged, and answered with a JSON 500 that reveals nothing.

    Starlette re-raises the exception after this response is sent, so the server (uvicorn) logs
    its traceback; one line here says which request it was.
    """
    log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
    return JSONResponse(
        {"detail": "internal server error; the server log has the details"},
        status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
