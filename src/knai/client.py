"""0.1.0's module path, kept for existing imports: `from knai.client import KNAIProvider`."""

from ._client import AsyncKNAIProvider, KNAIProvider

__all__ = ["AsyncKNAIProvider", "KNAIProvider"]
