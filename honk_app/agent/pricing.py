"""What a Claude request costs, from the usage the Messages API reports.

Prices are USD per million tokens, from Anthropic's pricing page (platform.claude.com/docs/en/
about-claude/pricing and each model's overview page), as of 2026-11. Cache writes are the
5-minute kind, the only one the agent uses. Standard tier on the Claude API; batch, fast mode
and US-only inference (1.1x) are not used by Honk and not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

log = structlog.get_logger()


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens of each kind."""

    input: float
    output: float
    cache_write: float
    cache_read: float


@dataclass(frozen=True)
class PriceTier:
    """A model's prices, and the higher ones it bills a request whose prompt is long."""

    base: ModelPrice
    long_prompt: ModelPrice | None = None
    long_prompt_above_tokens: int = 0

    def for_prompt(self, prompt_tokens: int) -> ModelPrice:
        if self.long_prompt is not None and prompt_tokens > self.long_prompt_above_tokens:
            return self.long_prompt
        return self.base


def _flat(input: float, output: float, cache_write: float, cache_read: float) -> PriceTier:
    return PriceTier(ModelPrice(input, output, cache_write, cache_read))


_OPUS_4_5_TO_5 = _flat(5.0, 25.0, 6.25, 0.50)
_OPUS_4_AND_4_1 = _flat(15.0, 75.0, 18.75, 1.50)
_SONNET_3_7_TO_4_6 = _flat(3.0, 15.0, 3.75, 0.30)
# Sonnet 4 and 4.5 with the 1M-token context window bill a prompt over 200k tokens higher.
_SONNET_4_LONG = PriceTier(
    ModelPrice(3.0, 15.0, 3.75, 0.30),
    long_prompt=ModelPrice(6.0, 22.50, 7.50, 0.60),
    long_prompt_above_tokens=200_000,
)

# Keyed by model id; a dated snapshot id ("claude-sonnet-4-5-20250929") matches its prefix.
PRICES: dict[str, PriceTier] = {
    "claude-fable-5-2": _flat(8.0, 40.0, 10.0, 0.20),
    "claude-mythos-5-2": _flat(8.0, 40.0, 10.0, 0.20),
    "claude-fable-5-1": _flat(10.0, 50.0, 12.50, 0.25),
    "claude-mythos-5-1": _flat(10.0, 50.0, 12.50, 0.25),
    "claude-fable-5": _flat(10.0, 50.0, 12.50, 1.00),
    "claude-mythos-5": _flat(10.0, 50.0, 12.50, 1.00),
    "claude-opus-5-5": _flat(4.0, 20.0, 5.0, 0.20),
    "claude-opus-5": _OPUS_4_5_TO_5,
    "claude-opus-4-8": _OPUS_4_5_TO_5,
    "claude-opus-4-7": _OPUS_4_5_TO_5,
    "claude-opus-4-6": _OPUS_4_5_TO_5,
    "claude-opus-4-5": _OPUS_4_5_TO_5,
    "claude-opus-4-1": _OPUS_4_AND_4_1,
    "claude-opus-4": _OPUS_4_AND_4_1,
    # Sonnet 5.5's cache reads went from $0.20 to $0.10 on 2026-10-07.
    "claude-sonnet-5-5": _flat(2.0, 10.0, 2.50, 0.10),
    "claude-sonnet-5": _flat(2.0, 10.0, 2.50, 0.20),
    "claude-sonnet-4-6": _SONNET_3_7_TO_4_6,
    "claude-sonnet-4-5": _SONNET_4_LONG,
    "claude-sonnet-4": _SONNET_4_LONG,
    "claude-3-7-sonnet": _SONNET_3_7_TO_4_6,
    "claude-3-5-sonnet": _SONNET_3_7_TO_4_6,
    "claude-3-opus": _OPUS_4_AND_4_1,
    "claude-haiku-5-5": PriceTier(
        ModelPrice(0.10, 0.50, 0.125, 0.01),
        long_prompt=ModelPrice(0.50, 2.50, 0.625, 0.05),
        long_prompt_above_tokens=100_000,
    ),
    "claude-haiku-4-5": _flat(1.0, 5.0, 1.25, 0.10),
    "claude-3-5-haiku": _flat(0.80, 4.0, 1.0, 0.08),
    "claude-3-haiku": _flat(0.25, 1.25, 0.30, 0.03),
}

# For a model this table does not know: the highest prices in it, so that a cost budget
# stops a run too early rather than too late.
UNKNOWN_MODEL_PRICE = _OPUS_4_AND_4_1

_warned_unknown: set[str] = set()


def price_for(model: str) -> PriceTier:
    """The price tier of a model id, by exact id or the longest known prefix of it."""
    if model in PRICES:
        return PRICES[model]
    prefixes = [known for known in PRICES if model.startswith(known + "-")]
    if prefixes:
        return PRICES[max(prefixes, key=len)]
    if model not in _warned_unknown:
        _warned_unknown.add(model)
        log.warning("pricing.unknown_model", model=model, assumed=UNKNOWN_MODEL_PRICE.base)
    return UNKNOWN_MODEL_PRICE


def cost_usd(
    model: str,
    *,
    input_tokens: int,
    output_tokens: int,
    cache_creation_input_tokens: int,
    cache_read_input_tokens: int,
) -> float:
    """What one request cost, from the four token counts of its `usage`."""
    prompt_tokens = input_tokens + cache_creation_input_tokens + cache_read_input_tokens
    price = price_for(model).for_prompt(prompt_tokens)
    total = (
        input_tokens * price.input
        + output_tokens * price.output
        + cache_creation_input_tokens * price.cache_write
        + cache_read_input_tokens * price.cache_read
    )
    return total / 1_000_000
