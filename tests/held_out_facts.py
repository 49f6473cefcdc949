"""Held-out questions with the word stems one of which an answer must name to keep its key fact.

Written on 2026-12-04 before any training run used them, with the stems fixed
then, and never used to choose a default: none is a demo, eval or probe
question. The defaults were measured on them after they were written
(docs/eval.md, "Sixteen questions written before the runs").
"""

from __future__ import annotations

HELD_OUT_FACTS: dict[str, tuple[str, ...]] = {
    "Why do we sneeze?": ("irritat", "nose", "nasal", "expel"),
    "How does a microwave oven heat food?": ("water", "molecul", "vibrat", "friction"),
    "Why do cats have whiskers?": ("sens", "touch", "navigat", "detect", "measur"),
    "How does a thermometer work?": ("expand", "mercury", "alcohol", "sensor", "resist"),
    "What causes hiccups?": ("diaphragm", "spasm", "contract"),
    "How do birds fly?": ("wing", "lift", "feather"),
    "What is the greenhouse effect?": ("trap", "carbon dioxide", "gases", "greenhouse gas"),
    "How do solar panels work?": ("photovolt", "electr", "silicon", "semiconduct"),
    "What causes the northern lights?": ("solar wind", "charged", "particle", "magnetic"),
    "What do white blood cells do?": ("infect", "immun", "pathogen", "bacteri", "defen", "fight"),
    "Why does metal feel colder than wood?": ("conduct",),
    "Why do apples turn brown after being cut?": ("oxid", "enzym", "oxygen"),
    "What causes tsunamis?": (
        "earthquake",
        "underwater",
        "displace",
        "plate",
        "volcan",
        "landslide",
    ),
    "How do glaciers form?": ("snow", "compress", "accumul"),
    "How does caffeine keep you awake?": ("adenosine", "block", "stimul", "nervous"),
    "Why do mosquito bites itch?": ("histamine", "saliva", "immun", "allerg"),
}
