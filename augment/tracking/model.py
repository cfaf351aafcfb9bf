"""The generator as an MLflow pyfunc model, and getting its snapshot back.

The model is logged *from code*: the model directory holds the snapshot ``.pt`` file (a state dict,
loaded with ``torch.load(weights_only=True)``), a copy of the ``augment`` package and a two-line
entry point, so loading it never unpickles code::

    import mlflow
    model = mlflow.pyfunc.load_model("models:/digits-cgan@champion")
    images = model.predict({"label": [3, 3, 7], "index": [0, 1, 0]})  # (3, C, H, W) in [0, 1]

Row ``i`` of the result depends only on ``(label[i], index[i])``: it is image number ``index`` of
class ``label`` that ``augment generate --seed 0`` writes (see :func:`augment.generate.sample`).
``seed`` is accepted in place of ``index`` (the column's name in earlier versions).
"""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from augment.errors import TrackingError
from augment.tracking.store import check_reachable, first_line, resolve_uri, use_uri

MODEL_NAME = "generator"  # artifact name of the logged pyfunc model inside its run
INDEX = "index"  # the model input column: which sample of its class a row is
INDEX_ALIAS = "seed"  # the same column's earlier name, still accepted

# The entry point MLflow executes to build the pyfunc model ("models from code"): no pickles.
_MODEL_CODE = '''\
"""MLflow models-from-code entry point of a gan-augment generator (written by augment.tracking)."""
import mlflow

from augment.tracking.model import GeneratorModel

mlflow.models.set_model(GeneratorModel())
'''

# What the logged model needs at load time (pinned to this environment; no slow inference).
_MODEL_REQUIREMENTS = (
    "mlflow",
    "torch",
    "torchvision",
    "numpy",
    "pandas",
    "pydantic",
    "pyyaml",
    "pillow",
    "scikit-learn",
    "scipy",
    "tqdm",
    "albumentations",  # imported by the augment package itself
)


def model_requirements() -> list[str]:
    """Pinned pip requirements of the logged generator (from this environment, no inference)."""
    reqs = []
    for dist in _MODEL_REQUIREMENTS:
        try:
            reqs.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


def log_generator_model(uri: str, experiment_id: str, run_id: str, snapshot_path: Path) -> str:
    """Log the snapshot at ``snapshot_path`` as a pyfunc model (from code) in ``run_id``; returns its model URI."""
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    from augment.checkpoint import load_snapshot

    snap = load_snapshot(snapshot_path)
    kw = snap.generator_kwargs
    shape = (-1, int(kw["channels"]), int(kw["image_size"]), int(kw["image_size"]))
    # `index` and its alias `seed` are both optional to MLflow's schema check (it would refuse a
    # request without a required column before predict runs); predict requires exactly one of them.
    signature = ModelSignature(
        inputs=Schema(
            [
                ColSpec("long", "label"),
                ColSpec("long", INDEX, required=False),
                ColSpec("long", INDEX_ALIAS, required=False),
            ]
        ),
        outputs=Schema([TensorSpec(np.dtype(np.float32), shape)]),
    )
    # MLflow 3 files the LoggedModel under the fluent "current" experiment, not the run's.
    use_uri(uri)
    mlflow.set_experiment(experiment_id=experiment_id)
    with tempfile.TemporaryDirectory(prefix="augment-model-") as tmp:
        code = Path(tmp) / "generator_model.py"
        code.write_text(_MODEL_CODE)
        package = Path(tmp) / "augment"
        shutil.copytree(
            Path(__file__).resolve().parents[1], package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        info = Model.log(
            artifact_path=None,
            name=MODEL_NAME,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            python_model=str(code),
            artifacts={"snapshot": str(snapshot_path)},
            code_paths=[str(package)],
            signature=signature,
            input_example={"label": [0], INDEX: [0]},
            pip_requirements=model_requirements(),
            metadata={
                "class_names": list(snap.class_names),
                "class_counts": list(snap.class_counts),
                "image_shape": list(shape[1:]),
                "data_fingerprint": snap.data_fingerprint,
                "kimg": snap.kimg,
            },
        )
    return info.model_uri


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """The pyfunc face of a snapshot: ``predict({"label": [...], "index": [...]})`` -> (N, C, H, W) in [0, 1].

    Built by MLflow from the logged entry point; the weights come from the snapshot artifact,
    loaded with ``torch.load(weights_only=True)``.
    """

    def load_context(self, context: Any) -> None:
        from augment.checkpoint import load_snapshot

        snap = load_snapshot(Path(context.artifacts["snapshot"]))
        self.class_names = list(snap.class_names)
        self.G = snap.generator("cpu")

    # A DataFrame hint: MLflow 3 infers no second schema from it (the logged signature rules) and
    # turns a {"label": [...], "index": [...]} dict into one before calling.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        import torch

        from augment.generate import sample

        if isinstance(model_input, pd.DataFrame):
            columns = {c: model_input[c].to_numpy() for c in model_input.columns}
        elif isinstance(model_input, Mapping):
            columns = {c: np.atleast_1d(np.asarray(v)) for c, v in model_input.items()}
        else:
            kind = type(model_input).__name__
            raise ValueError(f"expected a DataFrame or a dict with 'label' and 'index', got {kind}")
        # A column MLflow's schema check filled in for an absent optional input is all missing values.
        given = [c for c in (INDEX, INDEX_ALIAS) if c in columns and not pd.isna(columns[c]).all()]
        if "label" not in columns or not given:
            need = [c for c, ok in (("label", "label" in columns), (INDEX, bool(given))) if not ok]
            raise ValueError(f"model input lacks column(s) {need}; give 'label' and 'index' (or its alias 'seed')")
        if len(given) == 2:
            raise ValueError("give 'index' or its alias 'seed', not both")
        index_name = given[0]
        labels = torch.from_numpy(np.array(columns["label"], dtype=np.int64))
        indices = torch.from_numpy(np.array(columns[index_name], dtype=np.int64))
        if labels.shape != indices.shape:
            raise ValueError(f"'label' has {len(labels)} rows but '{index_name}' has {len(indices)}")
        k = len(self.class_names)
        if len(labels) and (labels.min() < 0 or labels.max() >= k):
            bad = labels[(labels < 0) | (labels >= k)][0].item()
            raise ValueError(f"label {bad} is not a class of this generator (0..{k - 1}: {self.class_names})")
        if len(indices) and indices.min() < 0:
            raise ValueError(f"'{index_name}' values must be >= 0")
        images = sample(self.G, labels, indices, seed=0)  # image i = f(label i, index i) only
        return ((images + 1) / 2).clamp_(0, 1).numpy().astype(np.float32)


def download_snapshot(model_uri: str, *, tracking_uri: str | None = None, dst: Path | None = None) -> Path:
    """Download a logged generator and return the path of its snapshot ``.pt`` file.

    Args:
        model_uri: ``models:/NAME@champion``, ``models:/NAME/3``, ``models:/m-...``,
            ``runs:/RUN_ID/generator`` or a local model folder.
        tracking_uri: defaults to :func:`resolve_uri` (``MLFLOW_TRACKING_URI`` or ``sqlite:///mlruns.db``).
        dst: folder to download into (default: a fresh temporary folder, the caller's to remove;
            removed again when the download fails).

    Raises:
        TrackingError: the store is unreachable, or the URI names no gan-augment generator.

    Example:
        >>> from augment.checkpoint import load_snapshot
        >>> snap = load_snapshot(download_snapshot("models:/digits-cgan@champion"))  # doctest: +SKIP
    """
    uri = tracking_uri or resolve_uri(None)
    check_reachable(uri)
    use_uri(uri)
    made = dst is None
    if dst is None:
        dst = Path(tempfile.mkdtemp(prefix="augment-generator-"))
    try:
        return _download(model_uri, dst)
    except TrackingError:
        if made:  # a failed download leaves no empty folder behind
            shutil.rmtree(dst, ignore_errors=True)
        raise


def _download(model_uri: str, dst: Path) -> Path:
    """The snapshot file of ``model_uri``'s generator, downloaded into ``dst``."""
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
        from mlflow.models import Model

        flavor = Model.load(str(local)).flavors.get("python_function", {})
        rel = flavor["artifacts"]["snapshot"]["path"]
    except MlflowException as err:
        raise TrackingError(f"{model_uri}: {first_line(err)}") from None
    except (KeyError, TypeError, OSError):
        raise TrackingError(f"{model_uri}: not a gan-augment generator (no snapshot artifact)") from None
    path = local / rel
    if not path.is_file():
        raise TrackingError(f"{model_uri}: snapshot artifact {rel} is missing")
    return path
