"""Usernames that look alike: the confusable skeleton of Unicode TS #39, from ICU's
SpoofChecker (the standard's reference implementation), made blind to case as well.

Two names with one skeleton are one name to a reader, so registration keeps skeletons
unique (login_service.store). In the name alphabet (A-Z, a-z, 0-9, `_ . -`) the standard's
data makes `m` and `rn` one, `0` and `O` one, and `1`, `I` and `l` one; web/js/text.js
marks authors by the same rule, written out for that alphabet.
"""

from __future__ import annotations

from functools import cache

import icu


@cache
def _checker() -> icu.SpoofChecker:
    # Built once per process (loading ICU's confusables data); skeletons are read-only.
    return icu.SpoofChecker()


def skeleton(username: str) -> str:
    """The TS #39 skeleton, case folded, and the skeleton of that: the standard maps a
    capital `I` to `l` but leaves `i` alone, so the case is folded after the first pass;
    folding can make a letter the data maps (`M` to `m`, then `rn`), hence the second."""
    checker = _checker()
    return checker.getSkeleton(0, checker.getSkeleton(0, username).casefold())
