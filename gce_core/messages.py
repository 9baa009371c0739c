"""Refusal text: a bad value is quoted short, so a refusal stays one readable line whatever was
typed (a 1,000,000-character value is quoted as its first 100 characters and its length)."""

from __future__ import annotations

import re

QUOTE_LIMIT = 100


def clip(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """repr(value), at most ``limit`` characters of it (then '…' and its full length)."""
    try:
        text = repr(value)
    except RecursionError:
        return f"a {type(value).__name__} nested too deeply to show"
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


_LONG_WORD = re.compile(r"\S{" + str(QUOTE_LIMIT + 30) + ",}")
_QUOTED = re.compile("'[^'\\n]{%s,}'|\"[^\"\\n]{%s,}\"".replace("%s", str(QUOTE_LIMIT)))


def clip_quotes(message: str, limit: int = QUOTE_LIMIT) -> str:
    """``message`` with every quoted part, and every word, longer than ``limit`` characters cut (see ``clip``),
    and at most 1000 characters in all: for messages made elsewhere (argparse, pydantic)."""
    message = _QUOTED.sub(lambda m: clip(m.group(0), limit), str(message))
    message = _LONG_WORD.sub(lambda m: clip(m.group(0), limit), message)  # unquoted values too
    return clip(message, 1000)
