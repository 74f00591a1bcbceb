"""What calls cost: a price table per model (text: $ per 1M input and output tokens; video: $ per
second; images: $ each), with defaults for the default models and overrides from settings.

Prices are the providers' list prices when this was written; operators override them with
PRICE_TABLE (JSON) when theirs differ. An unknown model is charged the fallback rate, which is set
high on purpose so that a missing entry errs toward refusing, not toward overspending.
"""

from __future__ import annotations

import json
from decimal import Decimal

from pydantic import BaseModel

from services.usage import Usage


class ModelPrice(BaseModel):
    input_per_million: Decimal = Decimal("0")
    output_per_million: Decimal = Decimal("0")
    per_second: Decimal = Decimal("0")
    per_image: Decimal = Decimal("0")


DEFAULT_PRICES: dict[str, ModelPrice] = {
    "google/gemini-2.5-flash": ModelPrice(input_per_million=Decimal("0.30"), output_per_million=Decimal("2.50")),
    "google/gemini-2.5-pro": ModelPrice(input_per_million=Decimal("1.25"), output_per_million=Decimal("10")),
    "openai/gpt-4o-mini": ModelPrice(input_per_million=Decimal("0.15"), output_per_million=Decimal("0.60")),
    "veo-3.0-fast-generate-001": ModelPrice(per_second=Decimal("0.40")),
    "veo-3.0-generate-001": ModelPrice(per_second=Decimal("0.75")),
    "veo-2.0-generate-001": ModelPrice(per_second=Decimal("0.50")),
    "imagen-4.0-generate-001": ModelPrice(per_image=Decimal("0.04")),
    "gemini-2.5-flash-image": ModelPrice(per_image=Decimal("0.039")),
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
        self.prices = dict(DEFAULT_PRICES)
        if overrides_json.strip():
            raw = json.loads(overrides_json)
            if not isinstance(raw, dict):
                raise ValueError("PRICE_TABLE must be a JSON object of model name -> prices")
            for model, price in raw.items():
                self.prices[str(model)] = ModelPrice.model_validate(price)

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
