"""The foundation every package stands on: atomic I/O, secret redaction, the project (root, runtime dir, composed
params and their schema), variants, the sandbox for LLM-written code, remotes, progress."""
