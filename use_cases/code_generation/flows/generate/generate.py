import ast
import re
from dataclasses import dataclass
from pathlib import Path

from promptflow.core import OpenAIModelConfiguration, Prompty

from stages.core.sandbox import extract_code

HERE = Path(__file__).parent


@dataclass
class Generated:
    code: str  # the whole function, ready to run
    raw: str  # the model's answer as it came
    valid: bool  # the code parses and defines the function named in the signature


def assemble(signature: str, answer: str) -> tuple[str, bool]:
    """The function source from the model's answer: a whole `def` (chat models), or a body for the signature
    (completion models continue the prompt after it). Valid when it parses and defines the function."""
    name = re.match(r"\s*def\s+(\w+)", signature)
    body = extract_code(answer).rstrip()
    code = body.strip() if name and re.search(rf"^\s*def\s+{name.group(1)}\b", body, re.M) else f"{signature}\n{body}"
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code, False
    defined = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    return code, bool(name) and name.group(1) in defined


def generate(
    task: str, signature: str, *, model_config: OpenAIModelConfiguration | None = None, api: str = "completion",
    prompt: str = "generate_v1.prompty", temperature: float = 0, max_tokens: int = 160,
) -> Generated:  # fmt: skip
    """Ask the LLM for the function; the toolkit injects everything after `*` (see flow.flex.yaml)."""
    if model_config is None:
        raise ValueError("no model_config: run this flow through the toolkit (llmops / dvc repro)")
    model = {"configuration": model_config, "parameters": {"temperature": temperature, "max_tokens": max_tokens}}
    answer = str(Prompty.load(source=HERE / prompt, model=model)(task=task, signature=signature))
    code, valid = assemble(signature, answer)
    return Generated(code=code, raw=answer, valid=valid)
