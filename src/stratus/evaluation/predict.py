"""One predictor for a loaded model object, scikit-learn estimator or torch ``nn.Module``: the
feature columns, optionally preprocessed with the training statistics, in; labels or values out."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from stratus.errors import BadRequest
from stratus.evaluation.metrics import check_task, evaluate

# The caller binds the statistics saved with the model, e.g.
# ``lambda frame: apply_statistics(frame, stats)`` (stratus.datasets.stats): datasets and
# evaluation are independent peers of one layer, so the predictor is handed the function.
Preprocess = Callable[[Any], Any]
BATCH_ROWS = 4096  # rows per forward pass of a torch model: bounds the activations' memory


def as_frame(data: Any) -> Any:
    """A pandas DataFrame from a DataFrame, a pyarrow Table, a list of row dicts, a dict of
    columns or a 2-D array (whose columns are then named "0", "1", ...)."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data
    if hasattr(data, "to_pandas") and hasattr(data, "column_names"):  # a pyarrow Table
        return data.to_pandas()
    if isinstance(data, np.ndarray):
        if data.ndim != 2:
            raise BadRequest(f"an array of features must be 2-D (rows, features), not of shape "
                             f"{data.shape}")
        return pd.DataFrame(data, columns=[str(i) for i in range(data.shape[1])])
    if isinstance(data, Mapping):
        try:
            return pd.DataFrame(dict(data))
        except ValueError as exc:
            raise BadRequest(f"columns of features do not form a table: {exc}") from None
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        if not all(isinstance(row, Mapping) for row in data):
            raise BadRequest("rows of features must each be an object of column: value")
        return pd.DataFrame(list(data))
    raise BadRequest(f"cannot read features from a {type(data).__name__}: give a DataFrame, "
                     f"a pyarrow Table, a list of rows or a 2-D array")


def feature_frame(data: Any, features: Sequence[str] | None,
                  preprocess: Preprocess | None = None) -> Any:
    """The feature columns in the order given (all columns when None), preprocessed."""
    frame = as_frame(data)
    if features is not None:
        if isinstance(features, str):
            raise BadRequest("features is a list of column names, not one string")
        missing = [name for name in features if name not in frame.columns]
        if missing:
            raise BadRequest(f"the data has no column(s) {', '.join(map(repr, missing))}; it "
                             f"has {', '.join(map(str, frame.columns))}")
        frame = frame[list(features)]
    if len(frame) == 0:
        raise BadRequest("there are no rows to predict")
    return preprocess(frame) if preprocess is not None else frame


def _is_torch_module(model: object) -> bool:
    torch = sys.modules.get("torch")  # a model that is a torch module implies torch is loaded
    return torch is not None and isinstance(model, torch.nn.Module)


def _predict_sklearn(model: Any, frame: Any) -> list[Any]:
    # An estimator fitted on a DataFrame checks the column names; one fitted on an array
    # warns when given names, so it gets the bare values.
    inputs = frame if hasattr(model, "feature_names_in_") else frame.to_numpy()
    try:
        output = model.predict(inputs)
    except ValueError as exc:
        raise BadRequest(f"the model cannot predict on these features: {exc}") from None
    return list(np.asarray(output).tolist())


def _torch_inputs(frame: Any) -> Any:
    import torch

    try:
        values = frame.to_numpy(dtype=np.float32, copy=True)  # torch wants it writable
    except (TypeError, ValueError):
        kinds = ", ".join(f"{name}: {kind}" for name, kind in frame.dtypes.items())
        raise BadRequest(f"a torch model takes numeric features; the columns are {kinds}") \
            from None
    if np.isnan(values).any():
        raise BadRequest("the features hold nulls, which a torch model cannot take")
    return torch.from_numpy(values)


def _forward(model: Any, inputs: Any) -> Any:
    import torch

    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            parts = []
            for start in range(0, inputs.shape[0], BATCH_ROWS):
                out = model(inputs[start:start + BATCH_ROWS].to(device))
                if not isinstance(out, torch.Tensor):
                    raise BadRequest(f"the model returned a {type(out).__name__}, not a tensor")
                parts.append(out.detach().float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(parts)


def _predict_torch(model: Any, frame: Any, task: str, classes: Sequence[Any] | None) -> list[Any]:
    output = _forward(model, _torch_inputs(frame))
    rows = frame.shape[0]
    if output.ndim == 0 or output.shape[0] != rows:
        raise BadRequest(f"the model returned shape {tuple(output.shape)} for {rows} rows")
    if task == "regression":
        values = output.squeeze(-1) if output.ndim > 1 and output.shape[-1] == 1 else output
        return list(values.numpy().astype(np.float64).tolist())
    if output.ndim < 2 or output.shape[-1] < 2:
        raise BadRequest(f"a classification model must return one score per class (shape "
                         f"[rows, classes]), not {tuple(output.shape)}")
    indices = output.argmax(dim=-1).numpy().tolist()
    if classes is None:
        return list(indices)
    if len(classes) != output.shape[-1]:
        raise BadRequest(f"the model scores {output.shape[-1]} classes but {len(classes)} "
                         f"class names were given")
    return [classes[i] for i in indices]


def predict(model: object, data: Any, *, task: str, features: Sequence[str] | None = None,
            classes: Sequence[Any] | None = None, preprocess: Preprocess | None = None) -> list[Any]:
    """Predictions, one per row, as plain Python values. A torch classifier's argmax over its
    last dimension is mapped through ``classes`` when given; a regressor's output is squeezed."""
    check_task(task)
    frame = feature_frame(data, features, preprocess)
    if _is_torch_module(model):
        return _predict_torch(model, frame, task, classes)
    if callable(getattr(model, "predict", None)):
        return _predict_sklearn(model, frame)
    raise BadRequest(f"cannot predict with a {type(model).__name__}: expected a scikit-learn "
                     f"estimator (with .predict) or a torch nn.Module")


def evaluate_model(model: object, data: Any, *, task: str, target: str,
                   features: Sequence[str] | None = None, classes: Sequence[Any] | None = None,
                   preprocess: Preprocess | None = None,
                   labels: Sequence[Any] | None = None) -> dict[str, Any]:
    """Predict on ``data`` and score the predictions against its ``target`` column; the
    features default to every other column."""
    frame = as_frame(data)
    if target not in frame.columns:
        raise BadRequest(f"the data has no target column {target!r}; it has "
                         f"{', '.join(map(str, frame.columns))}")
    if features is None:
        features = [str(name) for name in frame.columns if name != target]
    elif target in features:
        raise BadRequest(f"the target {target!r} cannot also be a feature")
    predictions = predict(model, frame, task=task, features=features, classes=classes,
                          preprocess=preprocess)
    return evaluate(task, frame[target].to_numpy(), predictions, labels)
