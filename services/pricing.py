"""What calls cost: a price table per model (text: $ per 1M input and output tokens; video: $ per
second; images: $ each), with defaults for the default models and overrides from settings.

Prices are the providers' list prices when this was written; operators override them with
PRICE_TABLE (JSON) when theirs differ. An unknown model is charged the fallback rate, which is set
high on purpose so that a missing entry errs toward refusing, not toward overspending.

An override is checked strictly: a misspelled price name would otherwise leave that price at 0 and
let the model escape every budget, and a negative price would pay users back for their calls.
"""

from __future__ import annotations

import json
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from services.usage import Usage


class ModelPrice(BaseModel):
    """US dollars per unit; a price left out is 0 (a text model has no per-second price)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_million: Decimal = Field(default=Decimal("0"), ge=0, allow_inf_nan=False)
    output_per_million: Decimal = Field(default=Decimal("0"), ge=0, allow_inf_nan=False)
    per_second: Decimal = Field(default=Decimal("0"), ge=0, allow_inf_nan=False)
    per_image: Decimal = Field(default=Decimal("0"), ge=0, allow_inf_nan=False)


PRICE_NAMES = tuple(ModelPrice.model_fields)
_OVERRIDES = TypeAdapter(dict[str, ModelPrice])


class PriceTableError(ValueError):
    """PRICE_TABLE is not a table of known, non-negative prices; the message is one line naming the model."""


def parse_price_overrides(overrides_json: str) -> dict[str, ModelPrice]:
    """Read PRICE_TABLE: a JSON object of model name -> {price name: dollars}."""
    if not overrides_json.strip():
        return {}
    try:
        raw = json.loads(overrides_json)
    except ValueError as exc:
        raise PriceTableError(f"must be JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise PriceTableError('must be a JSON object of model name -> prices, as in {"model": {"per_image": 0.04}}')
    try:
        return _OVERRIDES.validate_python(raw)
    except ValidationError as exc:
        raise PriceTableError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    model = str(first["loc"][0]) if first["loc"] else "?"
    if len(first["loc"]) < 2:
        return f'model "{model}": must be an object of prices ({", ".join(PRICE_NAMES)})'
    name = str(first["loc"][1])
    if first["type"] == "extra_forbidden":
        return f'model "{model}": unknown price {name} (known: {", ".join(PRICE_NAMES)})'
    if first["type"] == "greater_than_equal":
        return f'model "{model}": {name} must be 0 or more'
    return f'model "{model}": {name}: {first["msg"]}'


DEFAULT_PRICES: dict[str, ModelPrice] = {
    "google/gemini-2.5-flash": ModelPrice(input_per_million=Decimal("0.30"), output_per_million=Decimal("2.50")),
    "google/gemini-2.5-pro": ModelPrice(input_per_million=Decimal("1.25"), output_per_million=Decimal("10")),
    "openai/gpt-4o-mini": ModelPrice(input_per_million=Decimal("0.15"), output_per_million=Decimal("0.60")),
    "veo-3.0-fast-generate-001": ModelPrice(per_second=Decimal("0.40")),
    "veo-3.0-generate-001": ModelPrice(per_second=Decimal("0.75")),
    "veo-2.0-generate-001": ModelPrice(per_second=Decimal("0.50")),
    "imagen-4.0-generate-001": ModelPrice(per_image=Decimal("0.04")),
    "gemini-2.5-flash-image": ModelPrice(per_image=Decimal("0.039")),
    # Text in, audio tokens out (25 per second of speech).
    "gemini-2.5-flash-preview-tts": ModelPrice(input_per_million=Decimal("0.50"), output_per_million=Decimal("10")),
}
FALLBACK_PRICE = ModelPrice(
    input_per_million=Decimal("5"),
    output_per_million=Decimal("20"),
    per_second=Decimal("0.75"),
    per_image=Decimal("0.08"),
)
CENT = Decimal("0.000001")


class PriceTable:
    def __init__(self, overrides_json: str = "") -> None:
        self.prices = DEFAULT_PRICES | parse_price_overrides(overrides_json)

    def price(self, model: str) -> ModelPrice:
        return self.prices.get(model) or self.prices.get(model.split(":")[0]) or FALLBACK_PRICE

    def cost(self, model: str, usage: Usage) -> Decimal:
        price = self.price(model)
        total = (
            price.input_per_million * usage.prompt_tokens / Decimal(1_000_000)
            + price.output_per_million * usage.completion_tokens / Decimal(1_000_000)
            + price.per_second * usage.video_seconds
            + price.per_image * usage.images
        )
        return total.quantize(CENT)
