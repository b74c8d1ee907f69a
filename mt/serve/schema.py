"""POST /translate bodies: raw bytes -> a checked TranslateRequest, or a RequestError (4xx, one line).

    {"text": "A dog runs ."}                          one input
    {"texts": ["A dog runs .", "Two men talk ."]}     several
    optional: "beam" (1..max_beam), "n_best" (1..beam), "attention" (true: word matrices in the answer)

Parsed by hand rather than by a pydantic model so that every mistake (bytes that are not UTF-8,
JSON that is not JSON, a boolean given as beam size, an empty or oversized text) gets one plain
message in the API's `{"error": "..."}` shape.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import Any

from mt.config import DecodeConfig, ServeConfig
from mt.translate import clean

FIELDS = ("text", "texts", "beam", "n_best", "attention")
EXAMPLE = '{"text": "A dog runs ."}'


# For /openapi.json only: the checks below are what holds.
REQUEST_SCHEMA = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "description": "one text (or give texts)"},
        "texts": {"type": "array", "items": {"type": "string"}, "description": "several texts"},
        "beam": {"type": "integer", "minimum": 1, "description": "beam size (default: the server's)"},
        "n_best": {"type": "integer", "minimum": 1, "description": "translations per text, at most beam"},
        "attention": {"type": "boolean", "description": "include the word-level attention matrices"},
    },
    "additionalProperties": False,
    "example": {"text": "A dog runs in the park .", "n_best": 2, "attention": False},
}


class RequestError(Exception):
    """A request the client must fix: answered with `status` and {"error": message}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class TranslateRequest:
    texts: tuple[str, ...]
    beam: int
    n_best: int
    attention: bool  # include the word-level attention matrices

    @property
    def group(self) -> tuple[int, int]:
        """Requests with the same decoding settings can share a batch."""
        return self.beam, self.n_best

    @property
    def size(self) -> int:
        return len(self.texts)


def parse_translate_request(body: bytes, limits: ServeConfig, default: DecodeConfig) -> TranslateRequest:
    data = parse_json(body)
    if not isinstance(data, dict):
        raise RequestError(422, f"the body must be a JSON object like {EXAMPLE}, got {json_type(data)}")
    unknown = [key for key in data if key not in FIELDS]
    if unknown:
        raise RequestError(422, f"unknown field {unknown[0]!r}; the fields are {', '.join(FIELDS)}")
    texts = read_texts(data, limits)
    beam = read_int(data, "beam", default.beam_size, limits.max_beam, "the server's max_beam")
    n_best = read_int(data, "n_best", 1, beam, "the beam size")
    attention = data.get("attention", False)
    if not isinstance(attention, bool):
        raise RequestError(422, f"attention must be true or false, got {json_type(attention)}")
    return TranslateRequest(texts, beam, n_best, attention)


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise RequestError(400, f"the request body is empty; send JSON like {EXAMPLE}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestError(400, f"the request body is not valid UTF-8 (byte {err.start}: {err.reason})") from None
    try:
        return json.loads(text, parse_constant=reject_constant)
    except json.JSONDecodeError as err:
        raise RequestError(400, f"malformed JSON: {err.msg} (line {err.lineno}, column {err.colno})") from None
    except ValueError as err:  # NaN/Infinity, integers too long to convert
        raise RequestError(400, f"malformed JSON: {str(err).splitlines()[0]}") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None


def reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def read_texts(data: dict[str, Any], limits: ServeConfig) -> tuple[str, ...]:
    if ("text" in data) == ("texts" in data):
        raise RequestError(422, 'give either "text" (a string) or "texts" (a list of strings)')
    if "text" in data:
        return (read_text(data["text"], "text", limits),)
    texts = data["texts"]
    if not isinstance(texts, list):
        raise RequestError(422, f"texts must be a list of strings, got {json_type(texts)}")
    if not texts:
        raise RequestError(422, "texts is an empty list")
    if len(texts) > limits.max_texts:
        raise RequestError(413, f"texts has {len(texts)} items; at most {limits.max_texts} per request")
    return tuple(read_text(text, f"texts[{k}]", limits) for k, text in enumerate(texts))


def read_text(text: Any, name: str, limits: ServeConfig) -> str:
    if not isinstance(text, str):
        raise RequestError(422, f"{name} must be a string, got {json_type(text)}")
    if len(text) > limits.max_chars:
        raise RequestError(413, f"{name} has {len(text)} characters; at most {limits.max_chars} per text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # JSON's "\ud800" escapes decode to lone surrogates
        raise RequestError(422, f"{name} has an unpaired surrogate at character {err.start}") from None
    if not visible(clean(text)):
        raise RequestError(422, f"{name} is empty")
    return text


def visible(text: str) -> bool:
    """Anything but spaces and invisible format characters (zero-width space, BOM...)?"""
    return any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in text)


def read_int(data: dict[str, Any], key: str, default: int, maximum: int, bound: str) -> int:
    value = data.get(key, default)
    # bool is an int in Python; `"beam": true` is still a mistake.
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        shown = json.dumps(value) if isinstance(value, (int, float)) else json_type(value)
        raise RequestError(422, f"{key} must be an integer from 1 to {maximum} ({bound}), got {shown}")
    return value


def json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}
    if value is None:
        return "null"
    return names.get(type(value), "an object")
