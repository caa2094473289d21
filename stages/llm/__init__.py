"""The LLM side: connections (params + secrets from the environment), the LLM proxy every flow request goes through
(row-level cache, retries, request accounting) and the embedded llama.cpp server."""
