"""The AI gateway's pure core: OpenAI / Anthropic wire formats, model governance, token limits, prices,
and the measures that judge a model switch. No mitmproxy here (addons/ai.py adapts flows)."""
