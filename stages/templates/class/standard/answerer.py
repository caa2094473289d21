from dataclasses import dataclass
from pathlib import Path
from typing import Union

from promptflow.core import AzureOpenAIModelConfiguration, OpenAIModelConfiguration, Prompty

HERE = Path(__file__).parent
# typing.Union, not `|`: prompt flow checks an init param annotated with a single model configuration class
# against that class (and cannot read `X | Y`), so an Azure configuration would be refused.
ModelConfiguration = Union[OpenAIModelConfiguration, AzureOpenAIModelConfiguration]  # noqa: UP007


@dataclass
class Result:
    answer: str


class Answerer:
    """Answers a question with the variant's prompty, loaded once with the run's model configuration."""

    def __init__(
        self, model_config: ModelConfiguration, prompt: str = "answer.prompty", temperature: float = 0,
        max_tokens: int = 12,
    ) -> None:  # fmt: skip
        model = {"configuration": model_config, "parameters": {"temperature": temperature, "max_tokens": max_tokens}}
        self._prompty = Prompty.load(source=HERE / prompt, model=model)

    def __call__(self, question: str) -> Result:
        return Result(answer=str(self._prompty(question=question)).strip())
