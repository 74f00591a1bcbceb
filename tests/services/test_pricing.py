"""PRICE_TABLE overrides: a typo or a negative price must be refused, never priced at $0."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.pricing import DEFAULT_PRICES, FALLBACK_PRICE, PriceTable, PriceTableError
from services.usage import Usage


def test_an_override_replaces_a_default_and_adds_a_model() -> None:
    table = PriceTable(
        '{"google/gemini-2.5-flash": {"input_per_million": 1, "output_per_million": 4}, "local/llama": {}}'
    )
    assert table.cost("google/gemini-2.5-flash", Usage(prompt_tokens=1_000_000, completion_tokens=500_000)) == Decimal(
        "3.000000"
    )
    assert table.price("local/llama").input_per_million == 0  # a free local model, said on purpose
    assert table.price("veo-3.0-fast-generate-001") == DEFAULT_PRICES["veo-3.0-fast-generate-001"]
    assert table.price("never/heard-of") == FALLBACK_PRICE


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ('{"m": {"input_per_milion": 0.3}}', 'model "m": unknown price input_per_milion (known: input_per_million,'),
        ('{"m": 5}', 'model "m": must be an object of prices'),
        ('{"m": {"per_image": -0.04}}', 'model "m": per_image must be 0 or more'),
        ('{"m": {"per_second": "cheap"}}', 'model "m": per_second: Input should be a valid decimal'),
        ('{"m": {"per_second": 1e400}}', 'model "m": per_second: Input should be a finite number'),
        ('["m"]', "must be a JSON object of model name -> prices"),
        ("{m: 1}", "must be JSON"),
    ],
)
def test_a_bad_override_is_refused_with_one_line_naming_the_model(overrides: str, message: str) -> None:
    with pytest.raises(PriceTableError) as caught:
        PriceTable(overrides)
    assert str(caught.value).startswith(message), caught.value
    assert "\n" not in str(caught.value)
