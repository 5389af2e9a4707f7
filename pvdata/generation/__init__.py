"""Generation backends (HF transformers now; OpenAI-compatible and vLLM come with the judging issue)."""

from pvdata.generation.hf import Generation, generate

__all__ = ["Generation", "generate"]
