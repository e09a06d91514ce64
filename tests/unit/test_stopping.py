"""catalog/stopping.py: the one set of rules for where an answer ends, shared by the service's
answers and the answers scored during training."""

from __future__ import annotations

from tunelab.catalog.stopping import FINISHED, OUT_OF_TOKENS, Reply, end_token_ids, find_stop


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_end_tokens_are_the_end_token_and_a_one_token_end_of_turn(tiny_base):
    tok, template = tiny_base.tokenizer, tiny_base.template
    ids = end_token_ids(tok, template)
    assert tok.eos_token_id in ids
    end = _ids(tok, template.end)
    assert (end[0] in ids) == (len(end) == 1)
    assert None not in ids


def test_a_reply_ends_at_an_end_token(tiny_base):
    tok = tiny_base.tokenizer
    reply = Reply(tok, {tok.eos_token_id}, [], budget=50)
    for t in _ids(tok, "hello there"):
        reply.add(t)
    assert not reply.done
    reply.add(tok.eos_token_id)
    assert reply.done and reply.reason == FINISHED
    assert reply.text() == tok.decode(_ids(tok, "hello there"))
    reply.add(_ids(tok, "x")[0])  # nothing is added once it is done
    assert reply.text() == tok.decode(_ids(tok, "hello there"))


def test_a_reply_is_cut_before_the_first_stop_text(tiny_base):
    tok = tiny_base.tokenizer
    reply = Reply(tok, set(), ["STOP", "", "END"], budget=100)
    tokens = _ids(tok, "one two END three STOP")
    for t in tokens:
        reply.add(t)
        if reply.done:
            break
    assert reply.done and reply.reason == FINISHED and reply.cut
    assert reply.text().strip() == "one two"
    assert len(reply.ids) < len(tokens)  # stopped as soon as the stop text was complete


def test_a_reply_ends_at_its_budget(tiny_base):
    tok = tiny_base.tokenizer
    tokens = _ids(tok, "a b c d e f g h")
    reply = Reply(tok, set(), [], budget=3)
    for t in tokens:
        reply.add(t)
    assert reply.done and reply.reason == OUT_OF_TOKENS and len(reply.ids) == 3
    assert Reply(tok, set(), [], budget=0).done  # no room at all: done before any token


def test_an_incomplete_character_is_left_out_until_its_bytes_arrive(tiny_base):
    tok = tiny_base.tokenizer
    tokens = _ids(tok, "café ☕")
    reply = Reply(tok, set(), [], budget=100)
    texts, incomplete = [], []
    for t in tokens:
        reply.add(t)
        texts.append(reply.text())
        incomplete.append(reply.incomplete)
    assert all("\ufffd" not in x for x in texts)
    assert texts[-1] == tok.decode(tokens)
    # the coffee cup's bytes come in several tokens: incomplete until the last of them
    assert any(incomplete) and not incomplete[-1]
    assert incomplete == [tok.decode(tokens[:i + 1]).endswith("\ufffd")
                          for i in range(len(tokens))]


def test_find_stop_is_the_earliest_of_the_stops():
    assert find_stop("abc STOP def END", ["END", "STOP"]) == 4
    assert find_stop("abc", ["x", ""]) is None
