"""Serves the registered iris model, whichever a job made (scikit-learn or the torch MLP),
with the training statistics saved beside it."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from train import FEATURES, MLP

from stratus.datasets.stats import apply_statistics


class Iris:
    def __init__(self, ctx: Any) -> None:
        info = ctx.model_info("iris")
        self.version = info["version"]
        self.stats = info["meta"]["preprocessing"]
        self.classes = (info["meta"].get("signature") or {}).get("classes")
        if info["format"] == "safetensors":
            self.model = ctx.load_model("iris", module=MLP(**info["meta"]["module"]["init_kwargs"]))
        else:
            self.model = ctx.load_model("iris")

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        x = apply_statistics(pd.DataFrame(request["rows"])[FEATURES], self.stats).to_numpy()
        if isinstance(self.model, torch.nn.Module):
            with torch.no_grad():
                indices = self.model(torch.tensor(x, dtype=torch.float32)).argmax(-1).tolist()
            predictions = [self.classes[i] for i in indices]
        else:
            predictions = [str(p) for p in self.model.predict(x)]
        return {"predictions": predictions, "version": self.version}
