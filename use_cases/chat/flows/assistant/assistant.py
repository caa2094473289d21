"""A multi-turn chat assistant: a class entry configured in `__init__`, called once per user turn."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from promptflow.core import AzureOpenAIModelConfiguration, OpenAIModelConfiguration, Prompty

HERE = Path(__file__).parent
# typing.Union, not `|`: prompt flow checks an init param annotated with a single model configuration class
# against that class (and cannot read `X | Y`), so an Azure configuration would be refused.
ModelConfiguration = Union[OpenAIModelConfiguration, AzureOpenAIModelConfiguration]  # noqa: UP007


@dataclass
class Reply:
    answer: str


def recent_turns(chat_history: list[Any], max_turns: int) -> list[dict[str, Any]]:
    """The last `max_turns` turns of a prompt flow chat history, after checking every turn's shape.

    A turn is {"inputs": {"question": str}, "outputs": {"answer": str}}; anything else raises ValueError naming it.
    """
    for index, turn in enumerate(chat_history):
        inputs = turn.get("inputs") if isinstance(turn, dict) else None
        outputs = turn.get("outputs") if isinstance(turn, dict) else None
        question = inputs.get("question") if isinstance(inputs, dict) else None
        answer = outputs.get("answer") if isinstance(outputs, dict) else None
        if not isinstance(question, str) or not isinstance(answer, str):
            raise ValueError(
                f"chat_history[{index}]: expected {{'inputs': {{'question': str}}, 'outputs': {{'answer': str}}}}, "
                f"got {turn!r}"
            )
    return list(chat_history[-max_turns:]) if max_turns > 0 else []


class Assistant:
    """Answers the user's latest question in the context of the conversation so far, through a prompty file.

    For the completion API (base models) the prompty renders a few-shot transcript ending in "Assistant:"; for
    the chat API it sends role messages, one pair per prior turn.
    """

    def __init__(
        self, model_config: ModelConfiguration, api: str = "completion", prompt: str = "assistant.prompty",
        temperature: float = 0, max_tokens: int = 48, max_turns: int = 4,
    ) -> None:  # fmt: skip
        model = {
            "api": api,
            "configuration": model_config,
            "parameters": {"temperature": temperature, "max_tokens": max_tokens},
        }
        self._prompty = Prompty.load(source=HERE / prompt, model=model)
        self._max_turns = max_turns

    # Optional, not `list | None`: prompt flow's build reads typing.Optional but refuses `X | None` as a complex type.
    def __call__(self, question: str, chat_history: Optional[list] = None) -> Reply:  # noqa: UP045
        turns = recent_turns(chat_history or [], self._max_turns)
        return Reply(answer=str(self._prompty(question=question, chat_history=turns)).strip())
