"""The label set of the web classification use case (one place, used by the flow's normalize node)."""

LABELS: tuple[str, ...] = (
    "Academic",
    "App",
    "Movie",
    "News",
    "Recipe",
    "Shopping",
    "Sports",
    "Travel",
    "Video",
)

# Plain synonyms a model answers with instead of the label; anything else becomes OTHER.
SYNONYMS: dict[str, str] = {
    "film": "Movie",
    "films": "Movie",
    "movies": "Movie",
    "cinema": "Movie",
    "food": "Recipe",
    "cooking": "Recipe",
    "recipes": "Recipe",
    "sport": "Sports",
    "shop": "Shopping",
    "store": "Shopping",
    "apps": "App",
    "videos": "Video",
    "university": "Academic",
    "research": "Academic",
    "hotel": "Travel",
    "tourism": "Travel",
}

# Answers that are not a label or a synonym become OTHER; the raw answer is kept beside it.
OTHER = "Other"
