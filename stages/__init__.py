"""llmops: prompt flow use cases as a DVC stage graph with Hydra-composed params."""
