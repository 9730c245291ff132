"""Text as it should be spoken: markdown and symbols out, numbers as words, sentences apart.

An LLM writes for the eye (``**bold**``, lists, links, "$3.50", emoji); a TTS voice reads every
character it is given. `normalize_for_speech` turns a reply chunk into plain English a voice
can read; `split_sentences` cuts a long text into pieces a TTS model accepts in one call.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator

from num2words import num2words

_SCALE = r"(?:thousand|million|billion|trillion)"
_CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
}
_YEAR_CUE = r"(?:in|since|by|from|until|till|to|of|year|before|after|during|around|circa)"
_ABBREVIATIONS = {"e.g.": "for example", "i.e.": "that is", "etc.": "et cetera", "vs.": "versus"}
_SYMBOLS = {
    "&": " and ",
    "@": " at ",
    "+": " plus ",
    "=": " equals ",
    "%": " percent ",
    "°": " degrees ",
    "\u00d7": " times ",
    "/": " ",
    "\\": " ",
    "|": " ",
    "_": " ",
    "^": " ",
    "…": "...",
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u2212": "-",
}
_KEEP_PUNCT = set(".,!?;:'\"()-")
_SPOKEN = {"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Nd", "Nl", "No"}
_VARIATION_SELECTOR = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")

_Sub = tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]


def normalize_for_speech(text: str) -> str:
    """Plain, speakable English for `text`, which may be markdown written by an LLM.

    - markdown: emphasis, headers, bullets, quotes, rules, code fences and inline code lose
      their marks and keep their words; ``[text](url)`` reads as its text, a bare URL as
      "a link"; a header or list item ends with a full stop so that it is heard apart
    - numbers: "1,000" -> "one thousand", "-2.5" -> "minus two point five", "3rd" -> "third",
      "50%" -> "fifty percent", "$3.50" -> "three dollars and fifty cents", "3:30" ->
      "three thirty", "in 1999" -> "in nineteen ninety-nine", "1990s" -> "nineteen nineties"
    - symbols: & @ + = read as words; emoji and symbols that cannot be spoken are dropped
    - whitespace is collapsed; the result has no leading or trailing space ("" if nothing is
      left to say)
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _markdown(text)
    for pattern, repl in _WORDS:
        text = pattern.sub(repl, text)
    text = _speakable(text)
    for pattern, repl in _TIDY:
        text = pattern.sub(repl, text)
    return text.strip()


def split_sentences(text: str, max_chars: int) -> list[str]:
    """Cut `text` into sentences of at most `max_chars` characters (a longer sentence is cut at
    commas or other clause marks, then between words, then anywhere); empty pieces are dropped."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, not {max_chars}")
    pieces: list[str] = []
    start = 0
    for end in [m.end() for m in _SENTENCE_END.finditer(text)] + [len(text)]:
        pieces.extend(_fit(text[start:end].strip(), max_chars))
        start = end
    return [p for p in pieces if p]


def _fit(text: str, max_chars: int) -> Iterator[str]:
    if len(text) <= max_chars:
        yield text
        return
    for splitter in (_CLAUSE_END, _SPACE):
        parts = [p.strip() for p in splitter.split(text) if p.strip()]
        if len(parts) > 1:
            current = ""
            for part in parts:
                if current and len(current) + 1 + len(part) > max_chars:
                    yield from _fit(current, max_chars)
                    current = part
                else:
                    current = f"{current} {part}" if current else part
            yield from _fit(current, max_chars)
            return
    for start in range(0, len(text), max_chars):
        yield text[start : start + max_chars]


_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s)")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+|\s+(?=[(\-])")
_SPACE = re.compile(r"\s+")


def _markdown(text: str) -> str:
    lines = []
    for line in text.split("\n"):
        if _FENCE.match(line) or _RULE.match(line) or _TABLE_RULE.match(line):
            continue
        line = _QUOTE.sub("", line)
        item = _HEADER.match(line) or _BULLET.match(line)
        if item:
            line = line[item.end() :].rstrip()
            if line and line[-1] not in ".!?:;,":
                line += "."
        lines.append(line)
    text = "\n".join(lines)
    for pattern, repl in _INLINE:
        text = pattern.sub(repl, text)
    return text


_FENCE = re.compile(r"^\s*(```|~~~)")
_RULE = re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_QUOTE = re.compile(r"^\s*(>\s?)+")
_HEADER = re.compile(r"^\s*#{1,6}\s+")
_BULLET = re.compile(r"^\s*(?:[-*+•]|[0-9]{1,3}[.)])\s+")
_INLINE: list[_Sub] = [
    (re.compile(r"`+([^`]*)`+"), r"\1"),
    (re.compile(r"!?\[([^\]]*)\]\([^)]*\)"), r"\1"),
    (re.compile(r"<?(?:https?://|www\.)[^\s<>]*[^\s<>.,;:!?'\")\]]>?", re.IGNORECASE), "a link"),
    (re.compile(r"</?[A-Za-z][^<>\n]*>"), " "),
    (re.compile(r"(\*\*|__|~~)(?=\S)(.+?)(?<=\S)\1"), r"\2"),
    (re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])"), r"\1"),
    (re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])"), r"\1"),
]


_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _words(n: int, to: str = "cardinal") -> str:
    return str(num2words(n, lang="en", to=to)).replace(",", "")


def _digits(digits: str) -> str:
    return " ".join(_DIGIT_WORDS[int(d)] for d in digits)


def _integer(digits: str, to: str = "cardinal") -> str:
    """A whole number in words; one too long to say as a number, or with a leading zero, is
    read digit by digit."""
    digits = digits.replace(",", "")
    if len(digits) > 15 or (len(digits) > 1 and digits.startswith("0")):
        return _digits(digits)
    return _words(int(digits), to)


def _number(m: re.Match[str]) -> str:
    sign, whole, frac = m.group("sign"), m.group("int"), m.group("frac")
    words = _integer(whole)
    if frac:
        words += " point " + _digits(frac)
    if sign:
        words = "minus " + words
    return f" {words} "


def _money(m: re.Match[str]) -> str:
    one, many, sub_one, sub_many = _CURRENCIES[m.group("cur")]
    whole, frac, scale = m.group("int").replace(",", ""), m.group("frac"), m.group("scale")
    sign = "minus " if m.group("sign") else ""
    if scale:
        amount = _integer(whole) + (" point " + _digits(frac) if frac else "")
        return f" {sign}{amount} {scale.strip()} {many} "
    units = int(whole[-16:])
    cents = int((frac + "0")[:2]) if frac else 0
    parts = []
    if units or not cents:
        parts.append(f"{_integer(whole)} {one if units == 1 else many}")
    if cents:
        parts.append(f"{_words(cents)} {sub_one if cents == 1 else sub_many}")
    return f" {sign}{' and '.join(parts)} "


def _percent(m: re.Match[str]) -> str:
    return f"{_number(m).rstrip()} percent "


def _time(m: re.Match[str]) -> str:
    hour, minute, half = int(m.group("h")), int(m.group("m") or 0), m.group("ampm")
    if minute == 0:
        words = f"{_words(hour)} o'clock" if half is None else _words(hour)
    elif minute < 10:
        words = f"{_words(hour)} oh {_words(minute)}"
    else:
        words = f"{_words(hour)} {_words(minute)}"
    if half:
        words += " AM" if half.lower() == "a" else " PM"
        if m.group("stop") is not None:
            words += "."
    return f" {words} "


def _ordinal(m: re.Match[str]) -> str:
    return f" {_integer(m.group(1), 'ordinal')} "


def _year(m: re.Match[str]) -> str:
    return f"{m.group(1)} {_words(int(m.group(2)), 'year')}{m.group(3) or ''}"


def _plural(m: re.Match[str]) -> str:
    digits = m.group(1)
    year = len(digits) == 4 and 1100 <= int(digits) <= 2099
    words = _integer(digits, "year" if year else "cardinal")
    if words.endswith("y"):
        return f" {words[:-1]}ies "
    return f" {words}es " if words.endswith("x") else f" {words}s "


def _dotted(m: re.Match[str]) -> str:
    return " " + " dot ".join(_integer(part) for part in m.group(0).split(".")) + " "


_AMPM = r"(?:\s?(?P<ampm>[AaPp])(?:[Mm]\b|\.[Mm]\.(?P<stop>(?=\s*$|\s+[A-Z]))?))"
_NUM = r"(?P<int>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.(?P<frac>[0-9]+))?"
_SIGN = r"(?P<sign>(?<![\w.,])-)?"
_WORDS: list[_Sub] = [
    *(
        (re.compile(rf"(?<!\w){re.escape(abbr)}", re.IGNORECASE), full)
        for abbr, full in _ABBREVIATIONS.items()
    ),
    (re.compile(r"(?<=[A-Za-z]{2})\.(?=[A-Za-z]{2})"), " dot "),
    (re.compile(r"[\u2014]|\s[\u2013-]\s"), ", "),
    (re.compile(r"(?<=[0-9])\s?\u2013\s?(?=[0-9])"), " to "),
    (re.compile(r"#(?=[0-9])"), " number "),
    (re.compile(r"\s*(?:-+>|=+>|\u2192)\s*"), " to "),
    (re.compile(r"(?<=[\s0-9])<=(?=[\s0-9])"), " less than or equal to "),
    (re.compile(r"(?<=[\s0-9])>=(?=[\s0-9])"), " greater than or equal to "),
    (re.compile(r"(?<=[\s0-9])<(?=[\s0-9])"), " less than "),
    (re.compile(r"(?<=[\s0-9])>(?=[\s0-9])"), " greater than "),
    (re.compile(r"~(?=\s?[0-9])"), " about "),
    (re.compile(r"(?<![0-9.])[0-9]+(?:\.[0-9]+){2,}(?![0-9.])"), _dotted),
    (re.compile(rf"{_SIGN}(?P<cur>[$€£])\s?{_NUM}(?P<scale>\s+{_SCALE}\b)?"), _money),
    (re.compile(rf"{_SIGN}{_NUM}\s?%"), _percent),
    (
        re.compile(
            rf"(?<![0-9:])(?P<h>[01]?[0-9]|2[0-3]):(?P<m>[0-5][0-9])(?![0-9]|:[0-9]){_AMPM}?"
        ),
        _time,
    ),
    (re.compile(rf"(?<![0-9:.,])(?P<h>1[0-2]|[1-9])(?P<m>){_AMPM}"), _time),
    (re.compile(r"(?<![0-9.])([0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:st|nd|rd|th)\b", re.I), _ordinal),
    (re.compile(r"'?(?<![0-9.,])([0-9]+)'?s\b"), _plural),
    (re.compile(rf"\b({_YEAR_CUE})\s+(1[1-9][0-9]{{2}}|20[1-9][0-9])(?![0-9.,])(s?)", re.I), _year),
    (re.compile(rf"{_SIGN}(?<![0-9.]){_NUM}(?![0-9])"), _number),
    (re.compile(r"\s*[*`#~]+\s*"), " "),
]


def _speakable(text: str) -> str:
    out = []
    for ch in text:
        if ch in _SYMBOLS:
            out.append(_SYMBOLS[ch])
        elif ch.isspace():
            out.append(" ")
        elif ch in _KEEP_PUNCT:
            out.append(ch)
        else:
            category = unicodedata.category(ch)
            if category in _SPOKEN and not _VARIATION_SELECTOR.match(ch):
                out.append(ch)
            elif category[0] == "P":
                out.append(" ")
    return "".join(out)


_TIDY: list[_Sub] = [
    (re.compile(r"\s+"), " "),
    (re.compile(r"\(\s*\)"), " "),
    (re.compile(r"\(\s+"), "("),
    (re.compile(r"\s+\)"), ")"),
    (re.compile(r"\s+([,.!?;:])"), r"\1"),
    (re.compile(r"([,;:])(?:\s*[,;:])+"), r"\1"),
    (re.compile(r"[,;:]+(?=\s*[.!?])"), ""),
    (re.compile(r"^[\s,;:.!?]+"), ""),
    (re.compile(r"\s+"), " "),
]
