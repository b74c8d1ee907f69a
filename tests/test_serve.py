"""mt.serve: the HTTP API on the toy checkpoint (answers, n-best, attention shapes, every bad input,
batching, a full queue), the batcher on its own, the settings and the command line."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import torch
from fastapi.testclient import TestClient

from mt.config import DecodeConfig, ServeConfig
from mt.serve.__main__ import main as serve_main
from mt.serve.app import create_app
from mt.serve.batcher import Batcher, Unavailable
from mt.translate import Translator
from mt.translate import main as translate_main

SENTENCE = "Today the dog runs in the park ."
OTHERS = ["The cat sleeps in the house .", "A man waits at the beach .", "The dog sleeps .", "A cat runs ."]
LIMITS = ServeConfig(max_chars=200, max_texts=4, max_beam=6, max_body_bytes=16384)


@pytest.fixture(scope="module")
def ckpt(trained_run):
    return trained_run / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def translator(ckpt):
    return Translator(ckpt, torch.device("cpu"), DecodeConfig(), attention=True)


@pytest.fixture(scope="module")
def client(translator, ckpt):
    with TestClient(create_app(translator, LIMITS, checkpoint=ckpt)) as test_client:
        yield test_client


def translate(client, **body):
    response = client.post("/translate", json=body)
    assert response.status_code == 200, response.text
    return response.json()


# Answers ---------------------------------------------------------------------------------------
def test_translates_one_text_with_its_alignment(client):
    answer = translate(client, text=SENTENCE)
    (result,) = answer["results"]
    assert result["translation"].startswith("Heute läuft der hund")
    assert result["source_words"] == SENTENCE.split() and result["source"] == SENTENCE
    assert result["n_best"] == [{"translation": result["translation"], "score": result["score"]}]
    n_src, n_tgt = len(result["source_words"]), len(result["target_words"])
    assert sorted({j for _, j in result["links"]}) == list(range(n_tgt))  # every target word linked
    assert all(0 <= i < n_src for i, _ in result["links"])
    assert "attention" not in result and answer["beam"] == DecodeConfig().beam_size


def test_translates_many_texts_in_order(client):
    texts = [SENTENCE, *OTHERS[:3]]
    results = translate(client, texts=texts)["results"]
    assert [r["source"] for r in results] == texts
    alone = [translate(client, text=t)["results"][0]["translation"] for t in texts]
    assert [r["translation"] for r in results] == alone  # batching does not change a translation


def test_n_best_is_sorted_and_starts_with_the_translation(client):
    answer = translate(client, text=SENTENCE, beam=4, n_best=3)
    result = answer["results"][0]
    scores = [h["score"] for h in result["n_best"]]
    assert (answer["beam"], answer["n_best"], len(scores)) == (4, 3, 3)
    assert scores == sorted(scores, reverse=True) and result["n_best"][0]["translation"] == result["translation"]


def test_attention_matrices_match_the_words(client):
    health = client.get("/health").json()
    layers, heads = health["model"]["decoder_layers"], health["model"]["heads"]
    result = translate(client, text=SENTENCE, attention=True)["results"][0]
    n_src, n_tgt = len(result["source_words"]), len(result["target_words"])
    attention = result["attention"]
    assert torch.tensor(attention["by_head"]).shape == (layers, heads, n_tgt, n_src)
    assert torch.tensor(attention["by_layer"]).shape == (layers, n_tgt, n_src)
    mean = torch.tensor(attention["mean"])
    assert mean.shape == (n_tgt, n_src) and attention["aligned"] == attention["mean"]
    # No recorded heads: the links are read from the all-layer mean (default AlignConfig), one argmax per target word.
    assert (
        result["aligned_by"]["origin"] == "default" and health["model"]["alignment"] == "layer mean head mean (default)"
    )
    assert sorted([int(i), j] for j, i in enumerate(mean.argmax(dim=1).tolist())) == result["links"]


def test_answers_name_the_recorded_heads_and_read_them(tmp_path):
    """A checkpoint that records its aligning heads (full context): the links and the "aligned"
    matrix come from those heads, the answer says so, the words are word units."""
    from tests.test_align import SUPERVISED, toy_model_file

    ckpt = toy_model_file(tmp_path / "sup.pt", SUPERVISED)
    translator = Translator(ckpt, torch.device("cpu"), DecodeConfig(beam_size=2), attention=True)
    with TestClient(create_app(translator, LIMITS, checkpoint=ckpt)) as client:
        assert client.get("/health").json()["model"]["alignment"] == "layer 1 head 0, full context (supervised)"
        result = translate(client, text="the cat sits.", attention=True)["results"][0]
    assert result["source"] == "the cat sits." and result["source_words"] == ["the", "cat", "sits", "."]
    assert result["aligned_by"] == {
        "layer": 1,
        "heads": [0],
        "shift": False,
        "full_context": True,
        "null": False,
        "origin": "supervised",
        "description": "layer 1 head 0, full context (supervised)",
    }
    attention = result["attention"]
    aligned = torch.tensor(attention["aligned"])
    assert aligned.shape == (len(result["target_words"]), 4)
    assert attention["aligned"] == attention["by_head"][1][0]  # every view from the same full-context pass
    assert sorted([int(i), j] for j, i in enumerate(aligned.argmax(dim=1).tolist())) == result["links"]


def test_translate_format_json_prints_the_same_object(client, ckpt, capsys, monkeypatch):
    """`mt.translate --format json` and the API build their JSON with one function; one object per
    input line, an empty line included."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(f"{SENTENCE}\n\n".encode())))
    translate_main(["--checkpoint", str(ckpt), "--format", "json", "--beam", "3", "--n-best", "2"])
    first, empty = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert first == translate(client, text=SENTENCE, beam=3, n_best=2)["results"][0]
    assert (empty["translation"], empty["score"], empty["links"]) == ("", None, [])


def test_health_and_page(client, ckpt):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model_loaded"] is True
    assert (health["src_lang"], health["tgt_lang"], health["checkpoint"]) == ("en", "de", str(ckpt))
    assert health["version"] and health["limits"]["max_beam"] == LIMITS.max_beam
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("app.js", "style.css", "favicon.svg"):
        assert f"/static/{asset}" in page.text and client.get(f"/static/{asset}").status_code == 200
    assert not any(scheme in page.text for scheme in ("http://", "https://"))  # nothing from elsewhere


# Bad input: a 4xx with one JSON message, and the server answers the next request ---------------
BAD_REQUESTS = [
    ("malformed JSON", b'{"text": "a dog"', 400, "malformed JSON"),
    ("not JSON", b"the dog runs", 400, "malformed JSON"),
    ("empty body", b"", 400, "body is empty"),
    ("invalid UTF-8", b'{"text": "the \xc3\x28 dog"}', 400, "not valid UTF-8"),
    ("NaN", b'{"text": "a dog", "beam": NaN}', 400, "NaN is not a JSON value"),
    ("nested too deeply", b"[" * 5000 + b"]" * 5000, 400, "nested too deeply"),
    ("integer too long", b'{"text": "a dog", "beam": ' + b"9" * 5000 + b"}", 400, "malformed JSON"),
    ("array body", [SENTENCE], 422, "must be a JSON object"),
    ("unknown field", {"txt": SENTENCE}, 422, "unknown field 'txt'"),
    ("no text", {"beam": 2}, 422, 'either "text"'),
    ("text and texts", {"text": "a", "texts": ["b"]}, 422, 'either "text"'),
    ("text is a number", {"text": 5}, 422, "text must be a string, got a number"),
    ("texts is a string", {"texts": SENTENCE}, 422, "texts must be a list of strings"),
    ("texts has null", {"texts": [SENTENCE, None]}, 422, "texts[1] must be a string, got null"),
    ("empty text", {"text": ""}, 422, "text is empty"),
    ("whitespace and control characters", {"text": " \t\u0007\u0000 "}, 422, "text is empty"),
    ("empty text in texts", {"texts": [SENTENCE, "  "]}, 422, "texts[1] is empty"),
    ("invisible characters only", {"text": "\u200b \ufeff"}, 422, "text is empty"),
    ("empty list", {"texts": []}, 422, "texts is an empty list"),
    ("unpaired surrogate", b'{"text": "the \\ud800 dog"}', 422, "unpaired surrogate"),
    ("text too long", {"text": "a" * 201}, 413, "201 characters; at most 200"),
    ("too many texts", {"texts": [SENTENCE] * 5}, 413, "5 items; at most 4"),
    ("body too large", {"text": "a", "pad": "x" * 20000}, 413, "at most 16384"),
    ("beam 0", {"text": "a", "beam": 0}, 422, "beam must be an integer from 1 to 6"),
    ("beam above the limit", {"text": "a", "beam": 7}, 422, "beam must be an integer from 1 to 6"),
    ("beam as string", {"text": "a", "beam": "3"}, 422, "beam must be an integer"),
    ("beam as boolean", {"text": "a", "beam": True}, 422, "beam must be an integer"),
    ("beam as fraction", {"text": "a", "beam": 2.5}, 422, "got 2.5"),
    ("n_best above beam", {"text": "a", "beam": 2, "n_best": 3}, 422, "n_best must be an integer from 1 to 2"),
    ("attention as string", {"text": "a", "attention": "yes"}, 422, "attention must be true or false"),
]


@pytest.mark.parametrize(("case", "body", "status", "message"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_gets_a_json_4xx(client, case, body, status, message):
    if isinstance(body, bytes):
        response = client.post("/translate", content=body, headers={"content-type": "application/json"})
    else:
        response = client.post("/translate", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert list(response.json()) == ["error"] and message in response.json()["error"], response.json()
    assert translate(client, text="The cat sleeps .")["results"][0]["translation"]  # still serving


def test_wrong_method_and_path_are_json(client):
    for response, status in ((client.get("/translate"), 405), (client.get("/nowhere"), 404)):
        assert response.status_code == status and "error" in response.json()


def test_unexpected_error_is_a_bare_500_and_serving_goes_on(client, monkeypatch):
    import mt.serve.decoder

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(mt.serve.decoder, "translation_result", broken)
    response = client.post("/translate", json={"text": SENTENCE})
    assert response.status_code == 500 and list(response.json()) == ["error"]
    assert "secret" not in response.text and "Traceback" not in response.text
    monkeypatch.undo()
    assert translate(client, text=SENTENCE)["results"][0]["translation"]


# Batching and the queue: a gate holds the first batch in the model while others arrive ----------
@dataclass
class Gate:
    entered: threading.Event
    release: threading.Event
    calls: list[int]  # texts per Translator.translate call, i.e. per decoding batch


@pytest.fixture
def gate(monkeypatch):
    gate = Gate(threading.Event(), threading.Event(), [])
    original = Translator.translate

    def gated(self, lines, decode=None):
        gate.calls.append(len(lines))
        gate.entered.set()
        assert gate.release.wait(60)
        return original(self, lines, decode)

    monkeypatch.setattr(Translator, "translate", gated)
    yield gate
    gate.release.set()


def wait_until(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def post_while_decoding(client, gate, texts: list[str]):
    """The first text's request is held in the model; the others queue up; then all are released."""
    batcher = client.app.state.batcher
    with ThreadPoolExecutor(len(texts)) as pool:
        first = pool.submit(client.post, "/translate", json={"text": texts[0]})
        assert gate.entered.wait(30)
        rest = [pool.submit(client.post, "/translate", json={"text": t}) for t in texts[1:]]
        wait_until(lambda: batcher.waiting == len(rest))
        during = client.get("/health")  # the event loop answers while the model decodes
        gate.release.set()
        responses = [f.result(timeout=60) for f in (first, *rest)]
    assert during.status_code == 200 and during.json()["queue"]["decoding"] is True
    assert [r.json()["results"][0]["source"] for r in responses] == texts
    return batcher.stats


@pytest.mark.parametrize("batching", [True, False], ids=["batching", "no-batching"])
def test_requests_that_arrive_together_share_a_batch(translator, gate, batching):
    settings = ServeConfig(batching=batching, batch_window_ms=20)
    with TestClient(create_app(translator, settings)) as client:
        stats = post_while_decoding(client, gate, [SENTENCE, *OTHERS])
    if batching:  # the first alone, then the four that waited: one batch
        assert (stats.batches, stats.largest, gate.calls) == (2, 4, [1, 4])
    else:
        assert (stats.batches, stats.largest, gate.calls) == (5, 1, [1, 1, 1, 1, 1])


def test_full_queue_answers_503_and_serving_goes_on(translator, gate):
    with TestClient(create_app(translator, ServeConfig(queue_size=2))) as client:
        batcher = client.app.state.batcher
        with ThreadPoolExecutor(3) as pool:
            held = [pool.submit(client.post, "/translate", json={"text": t}) for t in (SENTENCE,)]
            assert gate.entered.wait(30)
            held += [pool.submit(client.post, "/translate", json={"text": t}) for t in OTHERS[:2]]
            wait_until(lambda: batcher.waiting == 2)
            refused = client.post("/translate", json={"text": OTHERS[2]})
            gate.release.set()
            assert [f.result(timeout=60).status_code for f in held] == [200, 200, 200]
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "2 requests are waiting" in refused.json()["error"]
        assert client.post("/translate", json={"text": OTHERS[2]}).status_code == 200


# The batcher on its own (no model) --------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    name: str
    group: int = 0
    size: int = 1


def run_batcher(settings: ServeConfig, scenario, work=None):
    """Run `scenario(batcher)`; the default work records its batches and upper-cases the names."""
    batches: list[list[str]] = []

    def record(jobs: list[Job]) -> list[str]:
        batches.append([j.name for j in jobs])
        if "bad" in batches[-1]:
            raise ValueError("cannot do bad")
        return [j.name.upper() for j in jobs]

    async def main():
        batcher = Batcher(work or record, settings)
        await batcher.start()
        try:
            return await scenario(batcher)
        finally:
            await batcher.stop()

    return asyncio.run(main()), batches


def test_batcher_gathers_what_arrives_within_the_window():
    async def scenario(batcher):
        first = asyncio.create_task(batcher.submit(Job("a")))
        await asyncio.sleep(0.02)  # well inside the 500 ms window
        return await asyncio.gather(first, batcher.submit(Job("b")), batcher.submit(Job("c", group=1)))

    answers, batches = run_batcher(ServeConfig(batch_window_ms=500, max_batch_texts=10), scenario)
    assert answers == ["A", "B", "C"] and batches == [["a", "b"], ["c"]]  # other decoding settings: own batch


def test_batcher_stops_a_batch_at_max_batch_texts_and_can_be_switched_off():
    async def scenario(batcher):
        return await asyncio.gather(*(batcher.submit(Job(name, size=2)) for name in "abcd"))

    _, batches = run_batcher(ServeConfig(batch_window_ms=200, max_batch_texts=4), scenario)
    assert batches == [["a", "b"], ["c", "d"]]
    _, batches = run_batcher(ServeConfig(batching=False), scenario)
    assert batches == [["a"], ["b"], ["c"], ["d"]]


def test_batcher_failure_reaches_its_requests_only():
    async def scenario(batcher):
        with pytest.raises(ValueError, match="cannot do bad"):
            await batcher.submit(Job("bad"))
        return await batcher.submit(Job("good"))

    answer, _ = run_batcher(ServeConfig(batch_window_ms=0), scenario)
    assert answer == "GOOD"


def test_batcher_refuses_when_the_queue_is_full():
    release = threading.Event()

    def held(jobs: list[Job]) -> list[str]:
        assert release.wait(30)
        return [j.name for j in jobs]

    async def scenario(batcher):
        first = asyncio.create_task(batcher.submit(Job("a")))
        while not batcher.busy:
            await asyncio.sleep(0.001)
        queued = [asyncio.create_task(batcher.submit(Job(name))) for name in "bc"]
        await asyncio.sleep(0.01)
        with pytest.raises(Unavailable, match="2 requests are waiting"):
            await batcher.submit(Job("d"))
        release.set()
        return await asyncio.gather(first, *queued)

    answers, _ = run_batcher(ServeConfig(queue_size=2, batch_window_ms=0), scenario, work=held)
    assert answers == ["a", "b", "c"]


# Settings and the command line ----------------------------------------------------------------
def test_serve_config_checks_its_ranges():
    assert ServeConfig().problems() == []
    found = ServeConfig(max_chars=0, batch_window_ms=-1, port=70000, host=" ").problems()
    assert [p.split()[0] for p in found] == ["serve.host", "serve.port", "serve.max_chars", "serve.batch_window_ms"]


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["--max-beam", "0"], "--max-beam must be at least 1"),
        (["--batch-window-ms", "5000"], "--batch-window-ms must be in [0, 1000]"),
        (["--port", "70000"], "--port must be in [0, 65535]"),
        (["--beam", "9"], "--beam (9) must not exceed --max-beam (8)"),
        (["--beam", "0"], "--beam must be at least 1"),
        (["--port", "0", "--checkpoint", "/nonexistent/best.pt"], "checkpoint not found"),
        (["--host", "192.0.2.1", "--checkpoint", "x.pt"], "cannot listen on 192.0.2.1"),  # not this machine's
    ],
)
def test_serve_cli_errors_are_one_line(argv, expect, capsys):
    with pytest.raises(SystemExit) as exit_:
        serve_main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and expect in lines[-1] and lines[-1].startswith("mt.serve: error: "), lines
    assert len(lines) == 1 or lines[0].startswith("mt.serve: using "), lines  # the checkpoint it tried


def test_serve_cli_busy_port_is_one_line(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(SystemExit) as exit_:
            serve_main(["--port", str(busy.getsockname()[1]), "--checkpoint", "x.pt"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "cannot listen on 127.0.0.1" in err and len(err.strip().splitlines()) == 1
