"""What the batch worker runs in its thread: one group of requests (same beam and n-best) through
the shared Translator in one call, then every request's answers (`mt.serve.results`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mt.serve.results import translation_result
from mt.serve.schema import TranslateRequest
from mt.translate import Translator

Answer = list[dict[str, Any]]  # one result per text of a request


def translate_requests(translator: Translator, requests: list[TranslateRequest]) -> list[Answer]:
    beam, n_best = requests[0].group  # the batcher groups requests by these
    decode = replace(translator.cfg, beam_size=beam, n_best=n_best)
    texts = [text for request in requests for text in request.texts]
    sources, hyps = translator.translate(texts, decode)
    tokenizer = translator.loaded.tokenizer
    answers, start = [], 0
    for request in requests:
        mine = range(start, start + request.size)
        answers.append(
            [translation_result(tokenizer, sources[k], hyps[k], translator.align, request.attention) for k in mine]
        )
        start += request.size
    return answers
