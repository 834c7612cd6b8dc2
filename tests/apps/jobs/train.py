"""Small training jobs for the tests: a torch MLP and a scikit-learn model on scikit-learn's
bundled iris data, and jobs that fail, run out of memory, run until cancelled or resume from
a checkpoint."""

from __future__ import annotations

import errno
import os
import signal
import time

import torch
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score

from stratus import JobContext
from stratus.datasets.stats import apply_statistics, fit_statistics


class MLP(torch.nn.Module):
    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.ReLU(),
                                          torch.nn.Linear(hidden, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _iris() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_iris()
    features = torch.tensor(data.data, dtype=torch.float32)
    features = (features - features.mean(0)) / features.std(0)
    return features, torch.tensor(data.target, dtype=torch.long)


def train_mlp(ctx: JobContext) -> None:
    print(f"first line of train_mlp in pid {os.getpid()}")
    torch.manual_seed(int(ctx.params.get("seed", 0)))
    x, y = _iris()
    model = MLP(int(ctx.params.get("hidden", 16)))
    optimizer = torch.optim.Adam(model.parameters(), lr=float(ctx.params.get("lr", 0.05)))
    ctx.log_params(optimizer="adam", rows=len(x))
    for epoch in range(1, int(ctx.params.get("epochs", 5)) + 1):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            accuracy = (model(x).argmax(1) == y).float().mean()
        ctx.log_metric("lr", optimizer.param_groups[0]["lr"], step=epoch)
        ctx.epoch(epoch, loss.item(), accuracy=accuracy)
        ctx.logger.info("epoch %d loss %.4f", epoch, loss.item())
    ctx.save_checkpoint({"model": model.state_dict(), "epoch": epoch})
    ctx.save_model(model, task="classification",
                   signature={"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]})


def train_sklearn(ctx: JobContext) -> None:
    data = load_iris()
    model = LogisticRegression(C=float(ctx.params.get("C", 1.0)), max_iter=500)
    model.fit(data.data, data.target)
    ctx.log_metric("accuracy", accuracy_score(data.target, model.predict(data.data)))
    ctx.save_model(model, task="classification")


def fail(ctx: JobContext) -> None:
    ctx.log_metric("progress", 0.5)
    raise ValueError(f"the learning rate must be positive, not {ctx.params.get('lr')}")


def hog(ctx: JobContext) -> None:
    """Grows its memory a page at a time until the sandbox stops it."""
    held = []
    while True:
        block = bytearray(16 << 20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
        held.append(block)


def wait(ctx: JobContext) -> None:
    """Starts a child process in its group, then runs until cancelled."""
    child = os.fork()
    if child == 0:
        while True:
            time.sleep(1)
    print(f"child {child}", flush=True)
    step = 0
    while True:
        step += 1
        ctx.log_metric("heartbeat", step, step=step)
        time.sleep(0.2)


def resume(ctx: JobContext) -> None:
    """Continues from its last checkpoint: each run adds one to the counter it holds."""
    state = ctx.load_checkpoint()
    count = 0 if state is None else int(state["count"])
    ctx.save_checkpoint({"count": count + 1, "weights": torch.arange(4.0)}, step=count + 1)
    ctx.log_metric("count", count + 1)
    again = ctx.load_checkpoint()
    assert again is not None and int(again["count"]) == count + 1, again
    assert torch.equal(again["weights"], torch.arange(4.0))


def misuse(ctx: JobContext) -> None:
    """Each wrong call raises in the job, with the reason: recorded as a parameter."""
    calls = {
        "nan": lambda: ctx.log_metric("x", float("nan")),
        "long_name": lambda: ctx.log_metric("y" * 64, 1.0),
        "list_param": lambda: ctx.log_params(bad=[1]),
        "model": lambda: ctx.save_model(object()),
        "dataset": lambda: ctx.dataset("nothing@1"),
        "step": lambda: ctx.log_metric("x", 1.0, step=1.5),
    }
    problems = {}
    for name, call in calls.items():
        try:
            call()
        except Exception as exc:
            problems[name] = f"{type(exc).__name__}: {exc}"
    ctx.log_params(**problems)


def steps(ctx: JobContext) -> None:
    """Counts to params["steps"], a checkpoint every 5 steps; a resumed run goes on from the
    last one."""
    state = ctx.load_checkpoint()
    start = 0 if state is None else int(state["step"])
    ctx.log_metric("resumed_at", start)
    for step in range(start + 1, int(ctx.params["steps"]) + 1):
        ctx.log_metric("step", step, step=step)
        if step % 5 == 0:
            ctx.save_checkpoint({"step": step}, step=step)
        time.sleep(0.05)


def fit_dataset(ctx: JobContext) -> None:
    """Fits on a dataset's train split, normalised by that split's statistics only, and scores
    the test split: a scikit-learn model, then a torch MLP from the split as a torch Dataset."""
    ref = str(ctx.params["dataset"])
    train, test = ctx.dataset(ref, split="train"), ctx.dataset(ref, split="test")
    features = [column for column in train.columns if column != "species"]
    stats = fit_statistics(train.to_arrow(), features)
    frame, held_out = train.to_pandas(), test.to_pandas()
    model = LogisticRegression(max_iter=500)
    model.fit(apply_statistics(frame, stats)[features], frame["species"])
    predicted = model.predict(apply_statistics(held_out, stats)[features])
    ctx.log_params(train_rows=train.num_rows, test_rows=test.num_rows)
    ctx.log_metric("test_accuracy", accuracy_score(held_out["species"], predicted))
    data = train.to_torch(features=features, target="species")
    loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=True)
    mlp = MLP(8)
    optimizer = torch.optim.Adam(mlp.parameters(), lr=0.05)
    for epoch in range(1, int(ctx.params.get("epochs", 3)) + 1):
        total = 0.0
        for x, y in loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(mlp(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
        ctx.epoch(epoch, total / len(data))
    ctx.save_model(model, task="classification", preprocessing={"standardize": stats})


def bad_split(ctx: JobContext) -> None:
    ctx.dataset(str(ctx.params["dataset"]), split="validation")


def probe(ctx: JobContext) -> None:
    """Who the worker runs as, and what it gets opening each of ``paths`` (one a line) and
    signalling ``pid``: each outcome is logged as a parameter (an errno name, or "ok")."""
    outcomes: dict[str, str | int] = {"uid": os.getuid()}
    for index, path in enumerate(str(ctx.params["paths"]).splitlines()):
        try:
            os.listdir(path) if os.path.isdir(path) else open(path, "rb").close()
            outcomes[f"path{index}"] = "ok"
        except OSError as exc:
            outcomes[f"path{index}"] = errno.errorcode.get(exc.errno or 0, str(exc))
    for number in (0, signal.SIGTERM):
        try:
            os.kill(int(ctx.params["pid"]), number)
            outcomes[f"signal{int(number)}"] = "ok"
        except OSError as exc:
            outcomes[f"signal{int(number)}"] = errno.errorcode.get(exc.errno or 0, str(exc))
    ctx.log_params(**outcomes)


def whoami(ctx: JobContext) -> None:
    """Who the worker runs as, where, and what it can reach."""
    print(f"uid {os.getuid()} in {os.getcwd()}")
    ctx.log_params(uid=os.getuid(), home=os.environ.get("HOME", ""),
                   sees_server_key="STRATUS_ADMIN_KEY" in os.environ,
                   reads_master_key=os.access(str(ctx.params["master_key"]), os.R_OK))
    ctx.save_checkpoint({"w": torch.ones(2)})
    assert ctx.load_checkpoint() is not None
    ctx.save_model(MLP(4))
