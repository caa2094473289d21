"""The verdict node of every evaluation flow with LLM judges: a prompt flow python tool, shared by path.

- name: verdicts
  type: python
  source: {type: code, path: ../../../../stages/engine/promptflow/judge_verdicts.py}
  inputs:                   # one input per judge node
    relevance: ${relevance.output}
    fluency: ${fluency.output}
"""

from promptflow.core import tool

from stages.metrics import judge


@tool
def verdicts(**answers: str) -> dict:
    """Each judge's 1-5 score (`<judge>`), or None and the reason in `<judge>_error` when its answer holds none."""
    return judge.verdicts(answers)
