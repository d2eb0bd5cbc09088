"""Category keys of the rule base and the interop codes they map to.

Every rule carries exactly one of our category keys plus, where one exists,
the Llama Guard 3 code (`S1`..`S14`) and the MLCommons AILuminate hazard id of
the harm it is about. Search filters accept any of the three kinds.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    """One hazard or behaviour category and its interop codes."""

    key: str
    description: str
    llama_guard: str | None = None
    hazards: tuple[str, ...] = ()


CATEGORIES: tuple[Category, ...] = (
    Category("violent_crimes", "violent crimes", "S1", ("vcr",)),
    Category(
        "nonviolent_crimes",
        "non-violent crimes: fraud, theft, cybercrime, drugs, weapons trade",
        "S2",
        ("ncr",),
    ),
    Category("sex_crimes", "sex-related crimes", "S3", ("src",)),
    Category("child_exploitation", "child sexual exploitation", "S4", ("cse",)),
    Category("defamation", "defamation", "S5", ("dfm",)),
    Category(
        "specialized_advice",
        "specialized medical, legal and financial advice",
        "S6",
        ("spc_hlt", "spc_lgl", "spc_fin"),
    ),
    Category("privacy", "privacy", "S7", ("prv",)),
    Category("intellectual_property", "intellectual property", "S8", ("ipv",)),
    Category(
        "indiscriminate_weapons",
        "chemical, biological, radiological, nuclear and explosive weapons",
        "S9",
        ("iwp",),
    ),
    Category("hate", "hate", "S10", ("hte",)),
    Category("self_harm", "suicide and self-harm", "S11", ("ssh",)),
    Category("sexual_content", "sexual content", "S12", ("sxc_prn",)),
    Category("elections", "elections", "S13", ("spc_ele",)),
    Category("code_interpreter_abuse", "code interpreter abuse", "S14"),
    Category("help_fully", "when to help fully: the benign side of sensitive topics"),
    Category("adversarial", "adversarial framing and jailbreak patterns"),
)

CATEGORY_KEYS: frozenset[str] = frozenset(c.key for c in CATEGORIES)
LLAMA_GUARD_CODES: frozenset[str] = frozenset(
    c.llama_guard for c in CATEGORIES if c.llama_guard
)
HAZARD_IDS: frozenset[str] = frozenset(h for c in CATEGORIES for h in c.hazards)
ALL_CODES: frozenset[str] = CATEGORY_KEYS | LLAMA_GUARD_CODES | HAZARD_IDS


def describe_codes() -> str:
    """Return the accepted category codes as one line for error messages."""
    return (
        f"category keys {sorted(CATEGORY_KEYS)}, Llama Guard codes S1..S14 "
        f"or AILuminate ids {sorted(HAZARD_IDS)}"
    )
