"""Tolerant person-name comparison: case- and accent-insensitive, optionally phonetic.

The public function ``names_match`` is the one place this is decided: the C-FIND policy
(``name_matching``) and the HTTP search's ``fuzzymatching`` parameter both call it, so a name
found by one is found by the other. Wildcards keep their DICOM meaning (``*`` any run, ``?`` one
character). Phonetic comparison uses Metaphone from ``jellyfish`` on each name component
(family, given, middle: the parts between ``^``) of the alphabetic group, after folding.
"""

from __future__ import annotations

import functools
import re
import unicodedata

import jellyfish

_COMPONENT_SPLIT = re.compile(r"[\^ ,]+")


def fold_name(text: str) -> str:
    """Upper case, accents removed, trailing component delimiters ignored: 'Müller^Jörg^' is
    'MULLER^JORG'. Ideographic and phonetic groups (after '=') are folded as well."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    groups = [group.rstrip("^ ") for group in bare.casefold().upper().split("=")]
    while len(groups) > 1 and not groups[-1]:
        groups.pop()
    return "=".join(groups)


@functools.lru_cache(maxsize=4096)
def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                              for c in pattern), re.DOTALL)


def wildcard_match(pattern: str, text: str) -> bool:
    """DICOM wildcard matching on decoded text, case-sensitive ('*' any run, '?' one)."""
    return _wildcard(pattern).fullmatch(text) is not None


def _sounds(name: str) -> tuple[str, ...]:
    """The Metaphone code of each component of the alphabetic group."""
    alphabetic = name.split("=", 1)[0]
    return tuple(jellyfish.metaphone(part) for part in _COMPONENT_SPLIT.split(alphabetic) if part)


def names_match(query: str, candidate: str, *, phonetic: bool = False) -> bool:
    """True if the person name ``candidate`` matches the query value ``query``.

    Folded comparison first (with wildcards); then, if ``phonetic``, a wildcard-free query
    whose components all sound like the candidate's leading components matches too (so
    'SMYTH^JON' finds 'Smith^John', and 'SMITH' finds 'Smith^John').
    """
    folded_query, folded = fold_name(query), fold_name(candidate)
    if wildcard_match(folded_query, folded):
        return True
    if not phonetic or "*" in folded_query or "?" in folded_query:
        return False
    wanted, have = _sounds(folded_query), _sounds(folded)
    return bool(wanted) and have[:len(wanted)] == wanted
