from dataclasses import dataclass
from pathlib import Path

from promptflow.core import OpenAIModelConfiguration, Prompty

HERE = Path(__file__).parent


@dataclass
class Result:
    answer: str


class Answerer:
    """Answers a question with a prompty: few-shot for completion models, a short instruction for chat models."""

    def __init__(
        self, model_config: OpenAIModelConfiguration, api: str = "completion", temperature: float = 0,
        max_tokens: int = 12,
    ) -> None:  # fmt: skip
        prompt = HERE / ("answer.prompty" if api == "completion" else "answer_chat.prompty")
        model = {"configuration": model_config, "parameters": {"temperature": temperature, "max_tokens": max_tokens}}
        self._prompty = Prompty.load(source=prompt, model=model)

    def __call__(self, question: str) -> Result:
        return Result(answer=str(self._prompty(question=question)).strip())
