"""The metrics library: scoring functions every evaluation flow can import (`from stages.metrics import judge`)."""
