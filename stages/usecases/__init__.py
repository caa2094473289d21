"""Use cases as projects hold them: the catalogue (`llmops new`, `add-use-case`), flow facts, and the import of
reference-template experiments (`llmops import-experiment`)."""
