"""The OpenAI-compatible API through the official ``openai`` client against a real server: a
tiny GPT-2 and a tiny BERT built locally, pushed to the model store, deployed with
``stratus deploy --llm`` / ``--embeddings``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from llm_models import build_tiny_bert, build_tiny_gpt2
from server import StratusServer, sticky_keys, wait_for

LLM = "oai-chat"
EMBED = "oai-embed"


@pytest.fixture(scope="module")
def deployed(server: StratusServer, tmp_path_factory: pytest.TempPathFactory) -> StratusServer:
    root = tmp_path_factory.mktemp("oai-models")
    gpt = build_tiny_gpt2(root / "gpt")
    bert = build_tiny_bert(root / "bert")
    server.cli("models", "push", "oai-gpt", str(gpt), "--version", "1.0.0", "--stage", "production")
    server.cli("models", "push", "oai-bert", str(bert), "--version", "1.0.0")
    server.cli("deploy", "--llm", "oai-gpt@production", "--name", LLM, "--min-replicas", "1",
               "--max-replicas", "1", "--config", json.dumps({"max_num_seqs": 8}))
    server.cli("deploy", "--embeddings", "oai-bert@1.0.0", "--name", EMBED, "--min-replicas", "1",
               "--max-replicas", "1")
    return server


@pytest.fixture()
def client(deployed: StratusServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{deployed.url}/v1", api_key=deployed.key,
                       max_retries=0, timeout=60) as made:
        yield made


def test_models_lists_the_openai_deployments(client: openai.OpenAI, deployed: StratusServer) -> None:
    deployed.deploy("basic", "app.py:Echo", name="oai-native")
    ids = {model.id for model in client.models.list()}
    assert {LLM, EMBED} <= ids
    assert "oai-native" not in ids
    assert client.models.retrieve(LLM).id == LLM


def test_completion_with_usage(client: openai.OpenAI) -> None:
    done = client.completions.create(model=LLM, prompt="The old man", max_tokens=5,
                                     temperature=0)
    assert done.object == "text_completion"
    assert len(done.choices) == 1
    assert done.choices[0].finish_reason in ("length", "stop")
    assert done.usage is not None
    assert done.usage.prompt_tokens > 0
    assert 0 < done.usage.completion_tokens <= 5
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    again = client.completions.create(model=LLM, prompt="The old man", max_tokens=5,
                                      temperature=0)
    assert again.choices[0].text == done.choices[0].text  # greedy is deterministic


def test_the_same_seed_gives_the_same_sample(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        done = client.completions.create(model=LLM, prompt="Once upon", max_tokens=12,
                                         temperature=1.0, top_p=0.9, seed=seed)
        return done.choices[0].text

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in range(4)}) > 1


def test_several_prompts_give_several_choices(client: openai.OpenAI) -> None:
    done = client.completions.create(model=LLM, prompt=["The sea", "A cat"], max_tokens=3,
                                     temperature=0)
    assert [choice.index for choice in done.choices] == [0, 1]


def test_chat_completion(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(
        model=LLM, max_tokens=6, temperature=0,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    )
    assert done.object == "chat.completion"
    assert done.choices[0].message.role == "assistant"
    assert isinstance(done.choices[0].message.content, str)
    assert done.usage is not None and done.usage.completion_tokens > 0


def test_chat_streaming_matches_the_unstreamed_answer(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "Tell me about the sea"}]
    whole = client.chat.completions.create(model=LLM, messages=messages, max_tokens=10,
                                           temperature=0)
    stream = client.chat.completions.create(model=LLM, messages=messages, max_tokens=10,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    pieces: list[str] = []
    finish = None
    usage = None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage is not None and whole.usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_raw_stream_ends_with_done(deployed: StratusServer) -> None:
    body = {"model": LLM, "prompt": "The", "max_tokens": 3, "stream": True, "temperature": 0}
    with deployed.http.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-stratus-revision"] == "1"
        assert response.headers["x-stratus-cold-start"] == "false"
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


def test_concurrent_streams_match_their_sequential_answers(client: openai.OpenAI) -> None:
    prompts = [f"Story number {i} begins" for i in range(8)]

    def complete(prompt: str, stream: bool) -> str:
        if not stream:
            done = client.completions.create(model=LLM, prompt=prompt, max_tokens=24,
                                             temperature=0)
            return done.choices[0].text
        chunks = client.completions.create(model=LLM, prompt=prompt, max_tokens=24,
                                           temperature=0, stream=True)
        return "".join(choice.text for chunk in chunks for choice in chunk.choices)

    alone = [complete(prompt, stream=False) for prompt in prompts]
    together: list[str | None] = [None] * len(prompts)

    def run(index: int) -> None:
        together[index] = complete(prompts[index], stream=True)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert together == alone


def test_embeddings(client: openai.OpenAI) -> None:
    done = client.embeddings.create(model=EMBED, input=["a small cat", "the wide sea"])
    assert [item.index for item in done.data] == [0, 1]
    first = done.data[0].embedding
    assert len(first) > 8
    assert abs(sum(x * x for x in first) - 1.0) < 1e-3  # normalised
    assert done.usage.prompt_tokens > 0
    alone = client.embeddings.create(model=EMBED, input="a small cat", encoding_format="float")
    assert alone.data[0].embedding == pytest.approx(first, abs=1e-5)


# -- errors -----------------------------------------------------------------------


def test_unknown_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")


def test_context_too_long(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=LLM, prompt="word " * 2000, max_tokens=4)
    assert caught.value.code == "context_length_exceeded"
    assert "maximum context length" in caught.value.message
    with pytest.raises(openai.BadRequestError) as streamed:
        list(client.chat.completions.create(
            model=LLM, messages=[{"role": "user", "content": "word " * 2000}], stream=True))
    assert streamed.value.code == "context_length_exceeded"


@pytest.mark.parametrize(
    ("params", "param"),
    [({"temperature": 5}, "temperature"), ({"top_p": 0}, "top_p"), ({"max_tokens": 0}, "max_tokens"),
     ({"n": 3}, "n"), ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"logprobs": 2}, "logprobs")],
)
def test_invalid_parameters(client: openai.OpenAI, params: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=LLM, prompt="x", **params)
    assert caught.value.code == "invalid_parameter"
    assert caught.value.param == param


def test_wrong_kind_of_model_and_malformed_bodies(deployed: StratusServer) -> None:
    response = deployed.http.post("/v1/embeddings", json={"model": LLM, "input": "x"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"
    response = deployed.http.post("/v1/chat/completions", content=b"{not json",
                                  headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["request_id"]
    response = deployed.http.post("/v1/chat/completions", json={"model": LLM, "messages": []})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"
    response = httpx.post(f"{deployed.url}/v1/completions", json={"model": LLM, "prompt": "x"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_a_client_that_disconnects_frees_its_sequence(deployed: StratusServer,
                                                      tmp_path: Path) -> None:
    deployed.cli("deploy", "--llm", "oai-gpt@1.0.0", "--name", "oai-one", "--min-replicas", "1",
                 "--max-replicas", "1", "--config", json.dumps({"max_num_seqs": 1}))
    body = {"model": "oai-one", "prompt": "The", "max_tokens": 200, "stream": True,
            "temperature": 1.0, "seed": 1}
    with deployed.http.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        next(response.iter_lines())
    # With one sequence allowed, the next request can only run once the first has left.
    def engine_idle() -> bool | None:
        text = deployed.http.get("/metrics").text
        running = [line for line in text.splitlines()
                   if line.startswith("stratus_llm_sequences{") and 'deployment="oai-one"' in line
                   and 'state="running"' in line]
        return True if running and all(line.endswith(" 0.0") for line in running) else None

    wait_for(engine_idle, 15, "the cancelled sequence to leave the engine")
    quick = deployed.http.post("/v1/completions", json={"model": "oai-one", "prompt": "A",
                                                         "max_tokens": 2})
    assert quick.status_code == 200, quick.text


def test_builtin_servers_deploy_through_rest_and_manifest(deployed: StratusServer,
                                                          tmp_path: Path) -> None:
    made = deployed.http.post("/api/deployments", json={"name": "oai-rest", "llm": "oai-gpt@1.0.0",
                                                         "min_replicas": 0})
    assert made.status_code == 200, made.text
    view = made.json()
    assert view["runtime"]["api"] == "llm"
    assert view["runtime"]["config"]["model"] == "oai-gpt"
    assert view["runtime"]["bundle"] == ""
    missing = deployed.http.post("/api/deployments", json={"llm": "absent@1.0.0"})
    assert missing.status_code == 400
    assert missing.json()["error"]["type"] == "deploy_error"
    both = deployed.http.post("/api/deployments", json={"llm": "oai-gpt@1.0.0", "embeddings":
                                                         "oai-bert@1.0.0"})
    assert both.status_code == 400
    manifest = tmp_path / "stratus.yaml"
    manifest.write_text("name: oai-manifest\nembeddings: oai-bert@1.0.0\nmin_replicas: 0\n")
    deployed.cli("deploy", str(manifest))
    assert deployed.status("oai-manifest")["runtime"]["api"] == "embeddings"
    done = deployed.http.post("/v1/embeddings", json={"model": "oai-manifest", "input": "sea"})
    assert done.status_code == 200, done.text
    assert done.headers["x-stratus-cold-start"] == "true"


def test_the_model_check_concerns_the_revision_that_serves(deployed: StratusServer) -> None:
    """Revision 1 serves embeddings; revision 2, native code, gets half the traffic while 1 stays
    stable. Each request is checked against the revision the split chose for it: one sent to
    the native revision is a 404, never a native answer dressed as OpenAI's."""
    name = "oai-mixed"
    made = deployed.http.post("/api/deployments", json={"name": name, "embeddings": "oai-bert@1.0.0",
                                                         "min_replicas": 0})
    assert made.status_code == 200, made.text
    native = deployed.deploy("basic", "app.py:Echo", name=name, rollout={"promote": False})
    assert native["revision"] == 2
    split = deployed.http.put(f"/api/deployments/{name}/traffic",
                              json={"traffic": {"1": 50, "2": 50}, "sticky": {"header": "x-user"}})
    assert split.status_code == 200 and split.json()["stable"] == 1, split.text
    keys = sticky_keys({1: 50, 2: 50})
    body = {"model": name, "input": "the wide sea"}

    refused = deployed.http.post("/v1/embeddings", json=body, headers={"x-user": keys[2]})
    assert refused.status_code == 404, refused.text
    error = refused.json()["error"]
    assert error["code"] == "model_not_found" and "serves the native and v2 APIs" in error["message"]
    pinned = deployed.http.post("/v1/embeddings", json=body, headers={"x-stratus-revision": "2"})
    assert pinned.status_code == 404 and pinned.json()["error"]["code"] == "model_not_found"
    served = deployed.http.post("/v1/embeddings", json=body, headers={"x-user": keys[1]})
    assert served.status_code == 200, served.text
    assert served.headers["x-stratus-revision"] == "1" and served.json()["data"][0]["embedding"]
