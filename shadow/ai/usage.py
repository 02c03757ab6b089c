"""Token counts, model and cost of one answer as capture columns (the `ai_*` columns of `exchanges`)."""

from __future__ import annotations

from shadow.ai.config import ChatCompletionSettings, ModelPrice
from shadow.ai.protocol import Answer

__all__ = ["ai_columns", "cost_usd"]


def cost_usd(price: ModelPrice | None, input_tokens: int | None, output_tokens: int | None) -> float | None:
    """USD for these tokens at this price (per million tokens); None without a price or token counts."""
    if price is None or (input_tokens is None and output_tokens is None):
        return None
    return ((input_tokens or 0) * price.input_per_million + (output_tokens or 0) * price.output_per_million) / 1e6


def ai_columns(answer: Answer, operation: str | None, requested_model: str | None,
               chat: ChatCompletionSettings | None, *, ttft_ms: float | None) -> dict[str, object]:
    model = answer.model or requested_model
    price = chat.price(model) if chat is not None else None
    if price is None and chat is not None and requested_model is not None:
        price = chat.price(requested_model)  # providers answer with dated names (gpt-4o-2024-08-06)
    return {
        "ai_operation": operation,
        "ai_model": model,
        "ai_input_tokens": answer.input_tokens,
        "ai_output_tokens": answer.output_tokens,
        "ai_cost_usd": cost_usd(price, answer.input_tokens, answer.output_tokens),
        "ai_ttft_ms": ttft_ms,
        "ai_streamed": answer.streamed,
    }
