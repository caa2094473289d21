import re

from promptflow.core import tool


def parse_entities(answer: str, entity_types: str) -> list[dict]:
    """'person: Ada Lovelace; location: London, Paris' -> [{type, text}, ...] for the requested types only.

    Unknown types and empty names are dropped; duplicates are kept once, in order of appearance.
    """
    allowed = {t.strip().lower() for t in entity_types.split(",") if t.strip()}
    entities, seen = [], set()
    for part in answer.split(";"):
        kind, sep, names = part.partition(":")
        kind = kind.strip().lower().rstrip("s")  # "persons" -> "person"
        if not sep or kind not in allowed:
            continue
        for name in names.split(","):
            name = re.sub(r"\s+", " ", name).strip(" .\"'")
            if name and (kind, name) not in seen:
                seen.add((kind, name))
                entities.append({"type": kind, "text": name})
    return entities


@tool
def parse(answer: str, entity_types: str) -> dict:
    """The parsed entities plus the raw answer (kept so nothing the model said is lost)."""
    return {"entities": parse_entities(answer or "", entity_types), "raw": answer or ""}
