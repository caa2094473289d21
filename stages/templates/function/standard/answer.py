from dataclasses import dataclass
from pathlib import Path

from promptflow.core import AzureOpenAIModelConfiguration, OpenAIModelConfiguration, Prompty

HERE = Path(__file__).parent


@dataclass
class Result:
    answer: str


def answer(
    question: str, *, model_config: OpenAIModelConfiguration | AzureOpenAIModelConfiguration | None = None,
    prompt: str = "answer.prompty", temperature: float = 0, max_tokens: int = 12,
) -> Result:  # fmt: skip
    """Answers a question with the variant's prompty; the toolkit injects everything after `*`."""
    if model_config is None:
        raise ValueError("no model_config: run this flow through the toolkit (llmops / dvc repro)")
    model = {"configuration": model_config, "parameters": {"temperature": temperature, "max_tokens": max_tokens}}
    return Result(answer=str(Prompty.load(source=HERE / prompt, model=model)(question=question)).strip())
