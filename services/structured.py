"""Structured model output: ask with a JSON schema, validate, repair, retry once, never show raw.

Not every OpenRouter model honours ``json_schema``; answers wrapped in code fences or prose are
repaired locally, and an answer that still does not validate, or that fails the caller's ``check``,
is asked for once more with the problem attached. A second failure is an ``InvalidResponse``, never
raw text and never a value that failed its check, unless the caller's ``usable`` accepts that value
as a lesser result: it then comes back with ``shortfall`` naming what is missing.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from connectors import openai_connector
from connectors.errors import InvalidResponse
from services.metering import meter_usage
from services.usage import Usage

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

INCOMPLETE_ANSWER = "The AI model's answer was incomplete, even after asking again. Please try again."

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


@dataclass(frozen=True)
class Structured(Generic[T]):
    value: T
    usage: Usage
    #: The check's complaint when ``usable`` accepted a value that still failed it; None when it passed.
    shortfall: str | None = None


def parse_model_output(schema: type[T], text: str) -> T:
    """Validate model text against ``schema``, repairing code fences and surrounding prose."""
    candidate = text.strip()
    fenced = _FENCE.match(candidate)
    if fenced:
        candidate = fenced.group(1)
    try:
        return schema.model_validate_json(candidate)
    except ValidationError:
        start, end = candidate.find("{"), candidate.rfind("}")
        if start == -1 or end <= start:
            raise
        return schema.model_validate(json.loads(candidate[start : end + 1]))


@functools.cache
def json_schema_of(schema: type[BaseModel]) -> dict[str, Any]:
    """Schemas are static; building one costs about half a millisecond, so build it once."""
    return schema.model_json_schema()


def _short_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
    return str(exc)[:300]


async def generate_structured(
    schema: type[T],
    *,
    model: str,
    system: str,
    user: str | list[dict[str, Any]],
    check: Callable[[T], str | None] | None = None,
    usable: Callable[[T], bool] | None = None,
    unusable_message: str | None = None,
    temperature: float | None = 0.8,
) -> Structured[T]:
    """Ask ``model`` for a ``schema`` instance; ``check`` may name a problem worth one retry.

    After the retry, a value that still fails ``check`` is returned only when ``usable`` accepts it
    (with ``shortfall`` set); otherwise ``InvalidResponse`` carries ``unusable_message`` (or a generic
    one) for the user.
    """
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": user},
    ]
    usage = Usage()
    last_value: T | None = None
    problem = ""
    for attempt in (1, 2):
        completion = await openai_connector.complete(
            model=model,
            messages=messages,
            json_schema=json_schema_of(schema),
            schema_name=schema.__name__,
            temperature=temperature,
        )
        call_usage = Usage(
            model_calls=1, prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens
        )
        meter_usage(model, call_usage)
        usage += call_usage
        try:
            if completion.finish_reason == "length":
                raise ValueError("the answer was cut off (too long); answer more briefly")
            value = parse_model_output(schema, completion.text)
        except (ValidationError, ValueError) as exc:
            problem = _short_error(exc)
            log.warning("model %s gave invalid %s (attempt %d): %s", model, schema.__name__, attempt, problem)
        else:
            issue = check(value) if check else None
            if issue is None:
                return Structured(value, usage)
            last_value, problem = value, issue
            log.info("model %s answer needs a fix (attempt %d): %s", model, attempt, issue)
        messages = [
            *messages,
            {"role": "assistant", "content": completion.text[:4000]},
            {
                "role": "user",
                "content": f"That answer was not usable: {problem}. Reply again with only JSON that follows the "
                "schema exactly.",
            },
        ]
    if last_value is not None:
        if usable is not None and usable(last_value):
            log.warning("model %s %s still short after a retry, used as is: %s", model, schema.__name__, problem)
            return Structured(last_value, usage, shortfall=problem)
        raise InvalidResponse(
            f"model {model} gave an unusable {schema.__name__} twice: {problem}",
            provider="openrouter",
            user_message=unusable_message or INCOMPLETE_ANSWER,
        )
    raise InvalidResponse(
        f"model {model} gave invalid {schema.__name__} twice: {problem}",
        provider="openrouter",
        user_message=unusable_message,
    )
