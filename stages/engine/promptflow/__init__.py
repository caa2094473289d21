"""The prompt flow adapter: the only code of the toolkit that imports `promptflow`.

- `adapter.py`: `PromptFlowEngine` (DAG, flex and prompty flows: detection, declared interface, loading);
- `flows.py`: the three flow kinds loaded in memory for one binding (prompt flow connections, model
  configurations and a FlowContext built from stages/engine/binding.py's decisions);
- `hooks.py`: every private prompt flow name and patch the toolkit relies on (row tagging, shared clients, TLS
  context and templates, in-process calls to the LLM proxy);
- `environment.py`: prompt flow's home, offline and quiet (imports nothing of prompt flow);
- `azure.py`: bulk runs on Azure ML; `docker.py`: a baked flow's Docker build context; `judge_verdicts.py`: the
  evaluation flows' shared verdict node (a prompt flow tool).
"""
