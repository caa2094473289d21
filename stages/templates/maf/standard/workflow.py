"""Scaffolded MAF workflow (`llmops new NAME --kind maf`): answer a question in a few words.

The toolkit's conventions for a MAF flow folder:
- `create_workflow(**params)` returns a fresh workflow per call (one instance cannot run concurrently); it gets the
  variant's prompt file (`prompt`, for the connection's API) and LLM params (conf/use_cases/<name>.yaml), so a
  variant changes them without editing this file;
- the row's inputs reach the start executor as the dataclass its handler declares (built by field name);
- what the workflow yields (a dict) is the row's outputs;
- the LLM client is built from OPENAI_BASE_URL / OPENAI_API_KEY / OPENAI_MODEL (or AZURE_OPENAI_*), which the
  toolkit points at its LLM proxy (cache, retries, token counts; the embedded base model through the chat bridge).
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Never

import jinja2
from agent_framework import Executor, Message, WorkflowBuilder, WorkflowContext, handler
from agent_framework.openai import OpenAIChatCompletionClient

HERE = Path(__file__).resolve().parent


@dataclass
class Question:
    question: str


class AnswerExecutor(Executor):
    def __init__(self, prompt: str, options: dict, **kwargs):
        super().__init__(**kwargs)
        source = (HERE / prompt).read_text(encoding="utf-8")
        self._template = jinja2.Template(source, trim_blocks=True, keep_trailing_newline=True)
        self._options = options
        self._client = OpenAIChatCompletionClient(
            model=os.environ["OPENAI_MODEL"],
            base_url=os.environ["OPENAI_BASE_URL"],
            api_key=os.environ["OPENAI_API_KEY"],
        )

    @handler
    async def answer(self, row: Question, ctx: WorkflowContext[Never, dict]) -> None:
        prompt = self._template.render(question=row.question)
        response = await self._client.get_response([Message("user", [prompt])], options=self._options)
        await ctx.yield_output({"answer": "\n".join(m.text for m in response.messages).strip()})


def create_workflow(prompt: str = "answer.jinja2", temperature: float = 0, max_tokens: int = 12):
    options = {"temperature": temperature, "max_tokens": max_tokens, "stop": ["\n"]}
    answer = AnswerExecutor(prompt, options, id="answer")
    return WorkflowBuilder(name="answer", start_executor=answer).build()
