"""Training functions of the lifecycle test: a scikit-learn classifier, a torch MLP and a
model too weak to pass a gate, each on a dataset's training split with its statistics."""

from __future__ import annotations

import torch
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

from stratus import JobContext
from stratus.datasets.stats import apply_statistics, fit_statistics

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
TARGET = "species"
SIGNATURE = {"features": FEATURES, "target": TARGET}


class MLP(torch.nn.Module):
    def __init__(self, hidden: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(len(FEATURES), hidden),
                                          torch.nn.ReLU(), torch.nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _training(ctx: JobContext):  # type: ignore[no-untyped-def]
    frame = ctx.dataset(str(ctx.params["dataset"]), split="train").to_pandas()
    stats = fit_statistics(frame, FEATURES)  # the training split's only
    return frame, stats, apply_statistics(frame[FEATURES], stats).to_numpy()


def train_sklearn(ctx: JobContext) -> None:
    frame, stats, x = _training(ctx)
    model = LogisticRegression(C=float(ctx.params.get("C", 1.0)), max_iter=500)
    model.fit(x, frame[TARGET])
    ctx.log_params(rows=len(frame))
    ctx.log_metric("train_accuracy", float(model.score(x, frame[TARGET])))
    ctx.save_model(model, task="classification", signature=SIGNATURE, preprocessing=stats)


def train_mlp(ctx: JobContext) -> None:
    frame, stats, x = _training(ctx)
    classes = sorted(frame[TARGET].unique())
    inputs = torch.tensor(x, dtype=torch.float32)
    targets = torch.tensor([classes.index(label) for label in frame[TARGET]])
    torch.manual_seed(0)
    hidden = int(ctx.params.get("hidden", 16))
    model = MLP(hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(ctx.params.get("lr", 0.05)))
    for epoch in range(1, int(ctx.params.get("epochs", 30)) + 1):
        for _ in range(10):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(inputs), targets)
            loss.backward()
            optimizer.step()
        ctx.epoch(epoch, float(loss))
    ctx.save_model(model, task="classification", signature={**SIGNATURE, "classes": classes},
                   preprocessing=stats, init_kwargs={"hidden": hidden})


def train_weak(ctx: JobContext) -> None:
    frame, stats, x = _training(ctx)
    model = DummyClassifier(strategy="most_frequent").fit(x, frame[TARGET])
    ctx.save_model(model, task="classification", signature=SIGNATURE, preprocessing=stats)
