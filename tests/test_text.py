"""Text normalisation for speech and sentence splitting (fast, no models)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voice_agent.backbone.text import normalize_for_speech, split_sentences


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        # markdown
        ("**Hello** there, *friend*!", "Hello there, friend!"),
        ("__bold__ and _italic_ and ~~struck~~", "bold and italic and struck"),
        ("# Big news\nWe won", "Big news. We won"),
        ("Shopping:\n- eggs\n- milk!\n* bread", "Shopping: eggs. milk! bread."),
        ("1. Preheat the oven\n2) Mix", "Preheat the oven. Mix."),
        ("> a quote\n---\nafter", "a quote after"),
        ("```python\nprint(x)\n```\ndone", "print(x) done"),
        ("Run `pip install` now.", "Run pip install now."),
        ("See [the docs](https://example.com/docs) please.", "See the docs please."),
        ("![a cat](cat.png)", "a cat"),
        ("Go to https://example.com/a?b=1.", "Go to a link."),
        ("(see www.example.org)", "(see a link)"),
        ("<b>bold</b> text", "bold text"),
        ("snake_case_name", "snake case name"),
        # numbers
        ("I have 3 apples.", "I have three apples."),
        ("1,000 people", "one thousand people"),
        (
            "1234567",
            "one million two hundred and thirty-four thousand five hundred and sixty-seven",
        ),
        ("It is -5 outside.", "It is minus five outside."),
        ("pi is 3.14", "pi is three point one four"),
        ("the 3rd and 21st and 100th", "the third and twenty-first and one hundredth"),
        ("50% off", "fifty percent off"),
        ("up 2.5%", "up two point five percent"),
        ("$3.50", "three dollars and fifty cents"),
        ("$1 or $0.99", "one dollar or ninety-nine cents"),
        ("$1,200", "one thousand two hundred dollars"),
        ("$5 million", "five million dollars"),
        ("£2.01", "two pounds and one penny"),
        ("3:30", "three thirty"),
        ("at 3:05 pm", "at three oh five PM"),
        ("10:00", "ten o'clock"),
        ("at 7 a.m. Then", "at seven AM. Then"),
        ("in 1999 and since 2024", "in nineteen ninety-nine and since twenty twenty-four"),
        ("the 1990s", "the nineteen nineties"),
        ("agent 007", "agent zero zero seven"),
        ("mp3 and 4K", "mp three and four K"),
        ("version 1.2.3", "version one dot two dot three"),
        ("5\u201310 km", "five to ten km"),
        ("1" * 20, " ".join(["one"] * 20)),
        # symbols
        ("Tom & Jerry", "Tom and Jerry"),
        ("me@example.com", "me at example dot com"),
        ("2 + 2 = 4", "two plus two equals four"),
        ("C++", "C plus plus"),
        ("#1 fan", "number one fan"),
        ("25\u00b0C", "twenty-five degrees C"),
        ("a -> b", "a to b"),
        ("x < 5", "x less than five"),
        ("e.g. this", "for example this"),
        ("wait\u2014what\u2026", "wait, what..."),
        ("\u201cquoted\u201d don\u2019t", '"quoted" don\'t'),
        # emoji and things that cannot be spoken
        ("Great job! \U0001f389\U0001f389", "Great job!"),
        ("Love it \u2764\ufe0f \U0001f44d\U0001f3fd \U0001f1fa\U0001f1f8.", "Love it."),
        ("family \U0001f468\u200d\U0001f469\u200d\U0001f467 time", "family time"),
        ("\u2122 \u00a9 \u2211", ""),
        ("\U0001f600", ""),
        # whitespace
        ("  lots \n\n of\tspace  ", "lots of space"),
        ("", ""),
    ],
)
def test_normalize_for_speech(text: str, spoken: str) -> None:
    assert normalize_for_speech(text) == spoken


def _unspeakable(ch: str) -> bool:
    """Emoji and their glue (joiners, variation selectors, skin tones, flags, keycaps)."""
    return unicodedata.category(ch) in {"So", "Sk", "Cs", "Co", "Cn", "Cf", "Cc", "Me"} or (
        "\ufe00" <= ch <= "\ufe0f"
    )


emoji = st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF) | st.sampled_from(
    ["\u200d", "\ufe0f", "\u20e3", "\u2764", "\u2600", "\U0001f3fb", "\U0001f1fa"]
)
markdownish = st.sampled_from([*"*_`#[]()<>!-+=&@$%:.,0123456789 \n", "```", "https://x.y"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=30) | emoji | markdownish, max_size=40).map("".join))
def test_normalize_never_raises_and_never_speaks_emoji(text: str) -> None:
    spoken = normalize_for_speech(text)
    assert not any(_unspeakable(ch) for ch in spoken)
    assert spoken == spoken.strip() and "  " not in spoken and "\n" not in spoken


@pytest.mark.parametrize(
    ("text", "max_chars", "pieces"),
    [
        ("One. Two! Three? Four", 100, ["One.", "Two!", "Three?", "Four"]),
        ('He said "stop." Then left.', 100, ['He said "stop."', "Then left."]),
        ("a, b, c, d", 5, ["a, b,", "c, d"]),
        ("aaa bbb ccc", 7, ["aaa bbb", "ccc"]),
        ("abcdefgh", 3, ["abc", "def", "gh"]),
        ("   ", 10, []),
    ],
)
def test_split_sentences(text: str, max_chars: int, pieces: list[str]) -> None:
    assert split_sentences(text, max_chars) == pieces


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400), st.integers(min_value=1, max_value=80))
def test_split_sentences_keeps_every_word_within_the_limit(text: str, max_chars: int) -> None:
    pieces = split_sentences(text, max_chars)
    assert all(0 < len(p) <= max_chars for p in pieces)
    assert "".join("".join(pieces).split()) == "".join(text.split())
