"""The trained generator as an MLflow model: log it with a run, load it anywhere with
`mlflow.pyfunc.load_model(f"runs:/{run_id}/model")`, and fill in blanks with `predict`.

The model's only artifact is the checkpoint (.pt: tensors, config and vocabulary, loaded with
`weights_only=True`); the in-filling itself is `maskgan_rl.infill.Infiller`, so MLflow serving and
`maskgan infill` follow the same text rules (one `___` per token, at most data.seq_len tokens).
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import Any, Optional

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature, set_model
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from maskgan_rl.infill import Infiller, example_text
from maskgan_rl.vocab import Vocab

MODEL_NAME = "model"  # the artifact path under the run: runs:/<run_id>/model
NO_SEED = -1  # MLflow params cannot default to None; a negative seed means "draw fresh randomness"

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string")]),  # unnamed: a plain list of texts is accepted as well as a DataFrame
    outputs=Schema([ColSpec("string")]),
    params=ParamSchema([ParamSpec("temperature", "double", 1.0), ParamSpec("seed", "long", NO_SEED)]),
)


class InfillModel(PythonModel):
    """`predict(["the ___ rose sharply"])` -> `["the index rose sharply"]`: one filled text per input text."""

    def load_context(self, context: PythonModelContext) -> None:
        self.infiller = Infiller.from_checkpoint(context.artifacts["checkpoint"])

    # MLflow applies SIGNATURE first, so texts arrive as a one-column DataFrame. It infers no schema from
    # a DataFrame hint (most hints would replace SIGNATURE and drop its params); called directly,
    # predict also takes what _texts accepts.
    def predict(self, context: PythonModelContext, model_input: pd.DataFrame, params: Optional[dict[str, Any]] = None) -> list[str]:
        params = params or {}
        seed = int(params.get("seed", NO_SEED))
        filled = self.infiller.fill(
            _texts(model_input),
            temperature=float(params.get("temperature", 1.0)),
            seed=None if seed < 0 else seed,
        )
        return [versions[0] for versions in filled]


def _texts(model_input: Any) -> list[str]:
    """A DataFrame (column "text", else its first column), a Series, an array, a list or one string."""
    if isinstance(model_input, pd.DataFrame):
        model_input = model_input["text"] if "text" in model_input.columns else model_input.iloc[:, 0]
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, (pd.Series, np.ndarray)):
        model_input = model_input.tolist()
    return [str(text) for text in model_input]


def log_infill_model(checkpoint: str | os.PathLike, vocab: Vocab) -> None:
    """Log `checkpoint`'s generator (trained on `vocab`) as a pyfunc model in the active MLflow run."""
    mlflow.pyfunc.log_model(
        name=MODEL_NAME,
        # Models from code: MLflow runs this file to get the model, rather than unpickling an object
        # (checkpoints are never unpickled either).
        python_model=__file__,
        artifacts={"checkpoint": str(checkpoint)},
        signature=SIGNATURE,
        input_example=[example_text(vocab.tokens)],  # MLflow's serving example; it also runs it once
        # Named outright: MLflow's inference would load the model in a subprocess just to list imports.
        pip_requirements=_requirements(),
    )


def _requirements() -> list[str]:
    requirements = []
    for package in ("torch", "numpy", "pandas", "omegaconf", "mlflow", "maskgan-rl"):
        try:
            requirements.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:  # maskgan-rl run from a source checkout, not installed
            continue
    return requirements


# What MLflow finds when it runs this file to load a logged model (see log_infill_model).
set_model(InfillModel())
