"""The benchmark's tasks, generated in code with a fixed seed.

Each task makes a pool of ``POOL`` training examples and ``TESTS`` test examples. A cell of
size ``n`` trains on the first ``n`` examples of the pool (so the 20 examples are among the 50,
the 50 among the 100, ...), and every cell of a task is scored on the same test examples.

The test inputs are never training inputs, and they are new in the way that matters for the
task: a classifier is tested on phrasings (sentence templates) that no training example uses,
an extractor on values (items, streets, names, cities) that no training example contains, a
normaliser on dates that no training example holds. ``check_disjoint`` verifies it for every
task, and the unit test runs it.

The kinds follow the issue: classification with many labels (``intent``), extraction to JSON
(``orders``), normalisation of messy values (``dates``), short summarising scored by token F1
(``tickets``), a task whose prompts carry a preamble and field labels as Gemini's tuning guide
recommends (``qa``), and extraction to a fixed line format (``entities``).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tunelab.data.examples import Example
from tunelab.training.evaluate import EXACT_MATCH as EXACT
from tunelab.training.evaluate import TOKEN_F1

POOL = 500  # training examples per task: the largest size
TESTS = 100  # held-out test examples per task
SEED = 17  # the number: the data never changes between runs or machines


@dataclass(frozen=True)
class Task:
    """One task's data. ``metric``: ``exact_match`` or ``token_f1`` (the free-text task).
    ``kind``: what the issue's targets group tasks by (``extraction`` and ``normalisation``
    must reach 0.95 at 100 examples)."""

    name: str
    kind: str
    metric: str
    description: str
    train: list[Example]
    test: list[Example]


def _train_and_test(make_train: Callable[[], tuple[str, str]],
                    make_test: Callable[[], tuple[str, str]],
                    ) -> tuple[list[Example], list[Example]]:
    """``POOL`` training examples, then ``TESTS`` test examples whose inputs are none of the
    training ones (made in that order, so a seed gives the same task)."""
    seen: set[str] = set()
    return _unique(make_train, POOL, seen), _unique(make_test, TESTS, seen)


def _unique(make: Callable[[], tuple[str, str]], count: int, avoid: set[str]) -> list[Example]:
    """``count`` examples from ``make`` with inputs unique and not in ``avoid`` (which grows)."""
    out: list[Example] = []
    tries = 0
    while len(out) < count:
        tries += 1
        if tries > count * 200:
            raise RuntimeError("a task generator cannot make enough distinct inputs")
        text, answer = make()
        if text in avoid:
            continue
        avoid.add(text)
        out.append(Example(text, answer))
    return out


def _interleave(groups: list[list[Example]]) -> list[Example]:
    """Round-robin over ``groups``, so that any prefix covers every group (every label) as
    evenly as its length allows."""
    out: list[Example] = []
    for i in range(max(len(g) for g in groups)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def _split(rng: random.Random, items: list, test_share: float) -> tuple[list, list]:
    """Items shuffled and cut into (training, test) lists."""
    items = list(items)
    rng.shuffle(items)
    k = max(1, round(len(items) * test_share))
    return items[k:], items[:k]


# ---- intent: classification with 12 labels, unseen phrasings at test time ------------------

INTENTS: dict[str, list[str]] = {
    "check_balance": [
        "how much money is in my {account} account", "what's my {account} balance",
        "show me the balance of my {account} account", "do I have enough in {account} for rent",
        "balance on my {account} account", "how much is left in my {account} account",
        "tell me what my {account} account has in it right now",
        "current funds in my {account} account"],
    "transfer_money": [
        "send {amount} to {person}", "move {amount} from {account} to savings",
        "transfer {amount} to {person}'s account", "I need to pay {person} {amount}",
        "wire {amount} over to {person}", "can you put {amount} into {person}'s account",
        "pay back {person} {amount} from my {account} account",
        "shift {amount} from {account} into my other account"],
    "lost_card": [
        "I lost my {card}", "my {card} was stolen", "can't find my {card} anywhere",
        "someone took my {card}", "block my {card}, it's gone",
        "I think I left my {card} at the {place}", "my {card} went missing yesterday",
        "freeze the {card}, I misplaced it"],
    "card_declined": [
        "my {card} got declined at the {place}", "why was my {card} rejected",
        "payment with my {card} failed at the {place}", "the {place} wouldn't accept my {card}",
        "my {card} keeps getting refused", "tried paying {amount} with my {card} and it bounced",
        "card payment denied at the {place}", "my {card} isn't working at the {place}"],
    "exchange_rate": [
        "what's the rate from {cur1} to {cur2}", "{cur1} to {cur2} rate today",
        "how much is one {cur1} in {cur2}", "convert {cur1} into {cur2}, what rate",
        "exchange rate {cur1} {cur2}", "what would my {cur1} be worth in {cur2}",
        "is the {cur1} strong against the {cur2} today", "rate for swapping {cur1} for {cur2}"],
    "open_account": [
        "I want to open a {account} account", "how do I start a new {account} account",
        "sign me up for a {account} account", "can I get a {account} account",
        "create a {account} account for me", "what do I need to open a {account} account",
        "apply for a new {account} account", "set up a {account} account in my name"],
    "close_account": [
        "close my {account} account", "I want to shut down my {account} account",
        "cancel my {account} account", "terminate the {account} account",
        "please delete my {account} account", "how do I get rid of my {account} account",
        "end my {account} account today", "I no longer need my {account} account, close it"],
    "change_pin": [
        "change the PIN on my {card}", "I want a new PIN for my {card}", "reset my {card} PIN",
        "forgot the PIN of my {card}", "update my {card} pin code",
        "how do I pick a different PIN for my {card}", "my {card} PIN needs changing",
        "set a fresh PIN on the {card}"],
    "report_fraud": [
        "there's a charge of {amount} I didn't make",
        "someone used my {card} without permission", "unknown payment of {amount} at the {place}",
        "I see transactions I don't recognise on my {account} account",
        "suspicious {amount} withdrawal on my account", "fraudulent charge at the {place}",
        "I never bought anything at the {place} but I was charged",
        "strange {amount} debit on my {account} account"],
    "update_address": [
        "I moved to {street}", "change my address to {street}", "new home address: {street}",
        "please update where I live, it's now {street}", "my address changed, I'm at {street}",
        "send my mail to {street} from now on", "I relocated, update my details to {street}",
        "correct my address to {street}"],
    "loan_inquiry": [
        "can I borrow {amount}", "what are your loan rates for {amount}",
        "I'd like a loan of {amount} for a {thing}", "how do I apply for a {thing} loan",
        "interest on a {amount} loan?", "am I eligible to borrow for a {thing}",
        "I need financing of {amount}", "loan options for buying a {thing}"],
    "speak_to_human": [
        "let me talk to a real person", "I want an agent", "connect me with customer service",
        "is there a human I can speak to", "get me a representative",
        "transfer me to staff please", "stop the bot, I need a person",
        "can someone from the bank call me"],
}
INTENT_SLOTS: dict[str, list[str]] = {
    "account": ["checking", "savings", "joint", "business", "student", "travel", "premium"],
    "card": ["debit card", "credit card", "visa card", "mastercard", "gold card", "bank card"],
    "person": ["Alice", "my landlord", "Ben", "my sister", "Carlos", "Dana", "my dad", "Eva"],
    "place": ["supermarket", "gas station", "airport", "cafe", "pharmacy", "hotel", "cinema"],
    "cur1": ["euro", "dollar", "pound", "yen", "franc", "peso"],
    "cur2": ["rupee", "krona", "zloty", "real", "won", "rand"],
    "street": ["12 Elm Street", "4 Harbour Road", "77 Mill Lane", "9 Station Avenue",
               "150 King's Way", "3 Orchard Close", "21 Bridge Street", "8 Park Row"],
    "thing": ["car", "house", "boat", "wedding", "kitchen renovation", "motorbike"],
}
GREETINGS = ["", "", "hi, ", "hello! ", "hey there, ", "good morning. ", "excuse me, "]
ENDINGS = ["", "", "", " please", " thanks", "?", " asap", " thank you!"]


def _fill(rng: random.Random, template: str, slots: dict[str, list[str]]) -> str:
    values = {k: rng.choice(v) for k, v in slots.items()}
    values["amount"] = rng.choice(["$", "€", "£"]) + str(rng.choice([20, 50, 75, 120, 300,
                                                                         450, 1000, 2500]))
    return template.format(**values)


def intent_task(seed: int) -> Task:
    rng = random.Random(f"{seed}-intent")
    train_groups, test_groups, seen = [], [], set()
    splits = {name: _split(rng, templates, 3 / 8) for name, templates in INTENTS.items()}

    def maker(label: str, templates: list[str]) -> Callable[[], tuple[str, str]]:
        def make() -> tuple[str, str]:
            text = rng.choice(GREETINGS) + _fill(rng, rng.choice(templates), INTENT_SLOTS)
            text = text + rng.choice(ENDINGS)
            return (text[0].upper() + text[1:] if rng.random() < 0.5 else text), label
        return make

    per_label = -(-POOL // len(INTENTS))
    for label, (train_t, _) in splits.items():
        train_groups.append(_unique(maker(label, train_t), per_label, seen))
    for label, (_, test_t) in splits.items():
        test_groups.append(_unique(maker(label, test_t), -(-TESTS // len(INTENTS)), seen))
    return Task("intent", "classification", EXACT,
                "banking chat message → one of 12 intent labels; test phrasings unseen",
                _interleave(train_groups)[:POOL], _interleave(test_groups)[:TESTS])


# ---- orders: a chat message → JSON, unseen items and streets at test time --------------------

ORDER_ITEMS = ["oat latte", "flat white", "cappuccino", "green tea", "hot chocolate",
               "espresso", "chai latte", "iced americano", "mocha", "matcha latte",
               "blueberry muffin", "croissant", "bagel with cream cheese", "cinnamon roll",
               "banana bread", "ham sandwich", "tomato soup", "caesar salad", "lemon tart",
               "apple juice", "cortado", "macchiato", "carrot cake", "veggie wrap",
               "orange juice", "brownie", "cheese toastie", "almond croissant", "iced tea",
               "pumpkin spice latte"]
ORDER_STREETS = ["Birch Road", "Elm Street", "Harbour Road", "Mill Lane", "Station Avenue",
                 "King's Way", "Orchard Close", "Bridge Street", "Park Row", "Church Lane",
                 "Victoria Road", "Maple Drive", "Queen Street", "High Street", "Cedar Court",
                 "Willow Way", "North Parade", "Riverside Walk", "Hill Crescent", "Oak Avenue",
                 "Market Square", "Abbey Road", "Rose Terrace", "Castle Street", "Dock Lane",
                 "Meadow View", "Forest Road", "Lime Grove", "Kingsley Place", "Garden Walk"]
ORDER_TEMPLATES = [
    "Could I get {qty} {size}{item} delivered to {address}?",
    "{qty} {size}{item} to {address} please",
    "hi! I'd like {qty} {size}{item}, address is {address}",
    "Please deliver {qty} {size}{item} to {address}, thanks",
    "order: {qty} {size}{item} -> {address}",
    "Can you send {qty} {size}{item} over to {address}",
    "I want {qty} {size}{item}. Deliver to {address}.",
    "{address}: {qty} {size}{item} please",
    "need {qty} {size}{item} at {address} asap",
    "Hello, {qty} {size}{item} for delivery to {address}, cheers",
    "Send {qty} {size}{item} to my place at {address}",
    "Good morning, we'd like {qty} {size}{item} brought to {address}",
]
NUMBER_WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def orders_task(seed: int) -> Task:
    rng = random.Random(f"{seed}-orders")
    items_train, items_test = _split(rng, ORDER_ITEMS, 1 / 3)
    streets_train, streets_test = _split(rng, ORDER_STREETS, 1 / 3)
    templates_train, templates_test = _split(rng, ORDER_TEMPLATES, 1 / 4)

    def maker(items: list[str], streets: list[str], templates: list[str]):
        def make() -> tuple[str, str]:
            item, qty = rng.choice(items), rng.randint(1, 9)
            size = rng.choice([None, "small", "medium", "large"])
            address = f"{rng.randint(1, 240)} {rng.choice(streets)}"
            said = NUMBER_WORDS[qty - 1] if rng.random() < 0.5 else str(qty)
            text = rng.choice(templates).format(qty=said, size=f"{size} " if size else "",
                                                item=item, address=address)
            answer = {"item": item, "quantity": qty, "size": size, "address": address}
            return text, json.dumps(answer)
        return make

    train, test = _train_and_test(maker(items_train, streets_train, templates_train),
                                  maker(items_test, streets_test, templates_test))
    return Task("orders", "extraction", EXACT,
                "café order message → JSON (item, quantity, size, address); test items, "
                "streets and phrasings unseen", train, test)


# ---- dates: a messy date → ISO 8601, unseen dates at test time -------------------------------

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]


def _ordinal(d: int) -> str:
    suffix = "th" if 11 <= d % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")
    return f"{d}{suffix}"


DATE_FORMATS: list[Callable[[dt.date], str]] = [
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{MONTHS[d.month - 1][:3]} {d.day} {d.year}",
    lambda d: f"{_ordinal(d.day)} of {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{d.year}/{d.month:02d}/{d.day:02d}",
    lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    lambda d: f"{MONTHS[d.month - 1].lower()} {_ordinal(d.day)} '{d.year % 100:02d}",
    lambda d: f"{d.strftime('%A')}, {d.day} {MONTHS[d.month - 1][:3]} {d.year}",
    lambda d: f"{d.day:02d}-{MONTHS[d.month - 1][:3].upper()}-{d.year}",
    lambda d: f"  {MONTHS[d.month - 1].upper()} {d.day} {d.year} ",
    lambda d: f"{d.year}.{d.month}.{d.day}",
    lambda d: f"the {_ordinal(d.day)} of {MONTHS[d.month - 1][:3]}. {d.year}",
]


def dates_task(seed: int) -> Task:
    rng = random.Random(f"{seed}-dates")
    start, days = dt.date(2000, 1, 1), (dt.date(2039, 12, 31) - dt.date(2000, 1, 1)).days
    used: set[dt.date] = set()

    def draw() -> Iterator[tuple[str, str]]:
        while True:
            d = start + dt.timedelta(days=rng.randint(0, days))
            if d in used:  # every date appears once: a test date is never a training date
                continue
            used.add(d)
            yield rng.choice(DATE_FORMATS)(d), d.isoformat()

    gen = draw()
    train, test = _train_and_test(lambda: next(gen), lambda: next(gen))
    return Task("dates", "normalisation", EXACT,
                "a date written 12 ways → YYYY-MM-DD; test dates unseen", train, test)


# ---- tickets: a support message → a one-line summary, scored by token F1 --------------------

PRODUCTS = ["kettle", "toaster", "blender", "coffee machine", "hair dryer", "vacuum cleaner",
            "desk lamp", "microwave", "air fryer", "electric toothbrush", "space heater",
            "rice cooker", "smart speaker", "food processor", "juicer"]
PROBLEMS = [("won't turn on anymore", "won't turn on"), ("leaks water everywhere", "leaks"),
            ("makes a loud grinding noise", "grinding noise"),
            ("smells of burning plastic", "burning smell"),
            ("stops after a few seconds", "stops after seconds"),
            ("has a cracked lid", "cracked lid"), ("trips the fuse in the house", "trips fuse"),
            ("arrived with a broken switch", "broken switch"),
            ("gets far too hot to touch", "overheats"),
            ("shows an error light that keeps flashing", "error light flashing")]
REQUESTS = [("send me a replacement", "replacement"), ("give me my money back", "refund"),
            ("tell me how to fix it", "repair instructions"),
            ("send someone to repair it", "repair visit"),
            ("let me know if it's under warranty", "warranty check"),
            ("exchange it for a different model", "exchange")]
OPENINGS = ["Hello, I bought a {p} from you {when}.", "Hi there. My {p} arrived {when}.",
            "Dear support, I ordered a {p} {when}.", "Good afternoon, we got your {p} {when}.",
            "Hey, I've had your {p} since {when}.", "Hi, I purchased the {p} {when}.",
            "Hello team, my new {p} came {when}.", "To whom it may concern: I own a {p} "
            "bought {when}."]
MIDDLES = ["Unfortunately it {prob}.", "Now it {prob}, which is really annoying.",
           "Since yesterday it {prob}.", "The problem is that it {prob}.",
           "Every time I use it, it {prob}.", "Out of nowhere it {prob}."]
CLOSINGS = ["Could you {req}? Thanks, {name}", "Please {req}. Regards, {name}",
            "I'd like you to {req}. Best, {name}", "Can you {req}? Cheers, {name}",
            "Would you {req}? {name}", "I expect you to {req}. Sincerely, {name}"]
WHEN = ["last week", "two months ago", "in March", "on Monday", "recently", "last year"]
NAMES = ["Sam", "Priya", "Tom", "Lena", "Omar", "Grace", "Yuki", "Marco", "Zoe", "Ivan"]


def tickets_task(seed: int) -> Task:
    rng = random.Random(f"{seed}-tickets")
    products_train, products_test = _split(rng, PRODUCTS, 1 / 3)
    opens_train, opens_test = _split(rng, OPENINGS, 1 / 4)
    middles_train, middles_test = _split(rng, MIDDLES, 1 / 3)
    closes_train, closes_test = _split(rng, CLOSINGS, 1 / 3)

    def maker(products, opens, middles, closes):
        def make() -> tuple[str, str]:
            p, (prob, prob_short), (req, req_short) = (
                rng.choice(products), rng.choice(PROBLEMS), rng.choice(REQUESTS))
            text = " ".join([rng.choice(opens).format(p=p, when=rng.choice(WHEN)),
                             rng.choice(middles).format(prob=prob),
                             rng.choice(closes).format(req=req, name=rng.choice(NAMES))])
            return text, f"{p.capitalize()} {prob_short}; wants {req_short}."
        return make

    train, test = _train_and_test(
        maker(products_train, opens_train, middles_train, closes_train),
        maker(products_test, opens_test, middles_test, closes_test))
    return Task("tickets", "summarisation", TOKEN_F1,
                "support message → one-line summary (product, problem, request); scored by "
                "token F1; test products and sentences unseen", train, test)


# ---- qa: a preamble and field labels, as the tuning guide recommends -------------------------

QA_PREAMBLE = ("Answer the question using only the context. Reply with the answer alone, "
               "in lower case.")
QA_PEOPLE = ["Maria", "Tom", "Aisha", "Lars", "Mei", "Pedro", "Hannah", "Kofi", "Ingrid",
             "Raj", "Sofia", "Jonas", "Amara", "Felix", "Nina", "Diego", "Elif", "Oscar",
             "Chloe", "Mateo", "Freya", "Hugo", "Leila", "Anton", "Rosa", "Viktor", "Alma",
             "Bruno", "Clara", "Emil"]
QA_FACTS = {
    "pet": (["cat", "dog", "parrot", "rabbit", "hamster", "tortoise", "goldfish", "lizard"],
            "{n} has a {v} at home.", ["What pet does {n} have?", "Which animal lives with {n}?",
                                       "What is {n}'s pet?"]),
    "city": (["lisbon", "oslo", "cairo", "lima", "hanoi", "dublin", "quito", "perth"],
             "{n} lives in {V}.", ["Where does {n} live?", "Which city is {n}'s home?",
                                   "In what city does {n} live?"]),
    "colour": (["red", "blue", "green", "yellow", "black", "white", "silver", "orange"],
               "{n} drives a {v} car.", ["What colour is {n}'s car?",
                                         "Which colour car does {n} drive?",
                                         "{n}'s car is what colour?"]),
    "job": (["nurse", "pilot", "baker", "teacher", "plumber", "chemist", "lawyer", "farmer"],
            "{n} works as a {v}.", ["What is {n}'s job?", "What does {n} do for a living?",
                                    "Which job does {n} have?"]),
}


def qa_task(seed: int) -> Task:
    rng = random.Random(f"{seed}-qa")
    people_train, people_test = _split(rng, QA_PEOPLE, 1 / 3)
    questions = {k: _split(rng, qs, 1 / 3) for k, (_, _, qs) in QA_FACTS.items()}

    def maker(people: list[str], test: bool):
        def make() -> tuple[str, str]:
            # three people with two facts each; the asked person's asked fact is among them,
            # and the others may have the same kind of fact (a distractor)
            names, kinds = rng.sample(people, 3), list(QA_FACTS)
            asked_kind, facts, answer = rng.choice(kinds), [], ""
            for i, name in enumerate(names):
                mine = ([asked_kind, rng.choice([k for k in kinds if k != asked_kind])]
                        if i == 0 else rng.sample(kinds, 2))
                for kind in mine:
                    values, fact, _ = QA_FACTS[kind]
                    v = rng.choice(values)
                    if i == 0 and kind == asked_kind:
                        answer = v
                    facts.append(fact.format(n=name, v=v, V=v.capitalize()))
            rng.shuffle(facts)
            question = rng.choice(questions[asked_kind][1 if test else 0]).format(n=names[0])
            text = f"{QA_PREAMBLE}\n\nquestion: {question}\ncontext: {' '.join(facts)}"
            return text, answer
        return make

    train, test = _train_and_test(maker(people_train, False), maker(people_test, True))
    return Task("qa", "extraction", EXACT,
                "preamble + question: / context: → a one-word answer from the context; test "
                "names and question phrasings unseen", train, test)


# ---- entities: people and cities named in a sentence → a fixed line format ------------------

ENT_PEOPLE = ["Anna Berg", "Luis Ortega", "Kenji Sato", "Fatima Noor", "Olga Petrova",
              "James Carter", "Ines Duarte", "Tariq Aziz", "Sara Lind", "Paul Meyer",
              "Nora Quinn", "Hassan Ali", "Ella Novak", "Ravi Mehta", "Lucy Brown",
              "Marek Nowak", "Ada Okafor", "Leon Fischer", "Mia Rossi", "Arjun Rao",
              "Julia Costa", "Ken Adams", "Zara Khan", "Theo Laurent"]
ENT_CITIES = ["Lisbon", "Oslo", "Nairobi", "Toronto", "Krakow", "Osaka", "Lyon", "Bergen",
              "Seville", "Mumbai", "Denver", "Tallinn", "Porto", "Adelaide", "Bogota", "Ghent",
              "Split", "Malmo", "Cork", "Bologna", "Leeds", "Quebec", "Hobart", "Graz"]
ENT_TEMPLATES = [
    ("{p1} flew from {c1} to {c2} on Tuesday.", 1, 2),
    ("{p1} and {p2} met for lunch in {c1}.", 2, 1),
    ("The conference in {c1} was opened by {p1}.", 1, 1),
    ("{p1} moved to {c1} last spring.", 1, 1),
    ("Nobody from the office has been to {c1} or {c2}.", 0, 2),
    ("{p1} called {p2} about the project deadline.", 2, 0),
    ("After leaving {c1}, {p1} spent a week in {c2} with {p2}.", 2, 2),
    ("The report was written by {p1}.", 1, 0),
    ("Trains between {c1} and {c2} are delayed today.", 0, 2),
    ("{p1}, {p2} and {p3} all grew up in {c1}.", 3, 1),
    ("It rained all day and the meeting was cancelled.", 0, 0),
    ("{p1} says {c1} has the best coffee.", 1, 1),
    ("A letter from {p1} arrived in {c1} two days late.", 1, 1),
    ("{p1} sold the flat in {c1} to {p2}.", 2, 1),
    ("Next month {p1} will visit {c1}, {c2} and {c3}.", 1, 3),
    ("We asked {p1} to reschedule.", 1, 0),
]


def _line(people: list[str], cities: list[str]) -> str:
    return f"people: {', '.join(people) or 'none'}; cities: {', '.join(cities) or 'none'}"


def entities_task(seed: int) -> Task:
    rng = random.Random(f"{seed}-entities")
    people_train, people_test = _split(rng, ENT_PEOPLE, 1 / 3)
    cities_train, cities_test = _split(rng, ENT_CITIES, 1 / 3)
    templates_train, templates_test = _split(rng, ENT_TEMPLATES, 1 / 4)

    def maker(people: list[str], cities: list[str], templates: list[tuple[str, int, int]]):
        def make() -> tuple[str, str]:
            template, n_people, n_cities = rng.choice(templates)
            ps, cs = rng.sample(people, n_people), rng.sample(cities, n_cities)
            text = template.format(**{f"p{i + 1}": p for i, p in enumerate(ps)},
                                   **{f"c{i + 1}": c for i, c in enumerate(cs)})
            # in the order the sentence names them
            ps.sort(key=text.index)
            cs.sort(key=text.index)
            return text, _line(ps, cs)
        return make

    train, test = _train_and_test(maker(people_train, cities_train, templates_train),
                                  maker(people_test, cities_test, templates_test))
    return Task("entities", "extraction", EXACT,
                "sentence → 'people: …; cities: …' in order of mention; test names, cities "
                "and sentence shapes unseen", train, test)


# ---- reviews: a product review → positive / negative / mixed; unseen products and phrasings -

REVIEW_PRODUCTS = ["headphones", "backpack", "running shoes", "phone case", "desk chair",
                   "water bottle", "rain jacket", "keyboard", "frying pan", "yoga mat",
                   "smart watch", "suitcase", "bike light", "thermos", "board game", "lamp"]
REVIEW_GOOD = ["works perfectly", "is really comfortable", "feels very solid",
               "arrived quickly and well packed", "looks even better than the photos",
               "is worth every penny", "does exactly what it promises",
               "has held up great after months of use", "exceeded my expectations",
               "is light and easy to carry", "was simple to set up", "keeps going all day"]
REVIEW_BAD = ["broke after two days", "feels cheap and flimsy", "stopped working within a week",
              "arrived scratched", "is much smaller than described", "smells of plastic",
              "was a waste of money", "fell apart on the first use", "is uncomfortable to use",
              "never charged properly", "has a strap that snapped", "is far too noisy"]
REVIEW_SHAPES = {
    "positive": ["The {p} {g1}.", "Love it! The {p} {g1} and {g2}.",
                 "Five stars: this {p} {g1}.", "Great buy. The {p} {g1}, and it {g2}.",
                 "My new {p} {g1}. Would recommend.", "Honestly the {p} {g1}."],
    "negative": ["The {p} {b1}.", "Avoid this {p}: it {b1} and {b2}.",
                 "One star. The {p} {b1}.", "Disappointed, the {p} {b1}, and it {b2}.",
                 "Returned the {p} because it {b1}.", "Sadly the {p} {b1}."],
    "mixed": ["The {p} {g1}, but it {b1}.", "Good and bad: the {p} {g1} yet {b1}.",
              "The {p} {b1}, although it {g1}.", "Three stars. It {g1}, but the {p} {b1}.",
              "Mixed feelings: my {p} {g1}; sadly it also {b1}.",
              "It {g1}, though the {p} {b1}."],
}


def reviews_task(seed: int) -> Task:
    """Three labels (few classes, each repeated) where the products, a third of the review
    shapes and a third of the good and bad phrases occur only at test time."""
    rng = random.Random(f"{seed}-reviews")
    products_train, products_test = _split(rng, REVIEW_PRODUCTS, 1 / 4)
    good_train, good_test = _split(rng, REVIEW_GOOD, 1 / 3)
    bad_train, bad_test = _split(rng, REVIEW_BAD, 1 / 3)
    shapes = {label: _split(rng, forms, 1 / 3) for label, forms in REVIEW_SHAPES.items()}

    def maker(label: str, test: bool) -> Callable[[], tuple[str, str]]:
        products = products_test if test else products_train
        good, bad = (good_test, bad_test) if test else (good_train, bad_train)
        forms = shapes[label][1 if test else 0]

        def make() -> tuple[str, str]:
            g1, g2 = rng.sample(good, 2)
            b1, b2 = rng.sample(bad, 2)
            text = rng.choice(forms).format(p=rng.choice(products), g1=g1, g2=g2, b1=b1, b2=b2)
            return text[0].upper() + text[1:], label
        return make

    seen: set[str] = set()
    per_label, per_test = -(-POOL // 3), -(-TESTS // 3)
    train = _interleave([_unique(maker(label, False), per_label, seen) for label in REVIEW_SHAPES])
    test = _interleave([_unique(maker(label, True), per_test, seen) for label in REVIEW_SHAPES])
    return Task("reviews", "classification", EXACT,
                "product review → positive / negative / mixed; test products and phrasings "
                "unseen", train[:POOL], test[:TESTS])


TASKS: dict[str, Callable[[int], Task]] = {
    "intent": intent_task,
    "orders": orders_task,
    "dates": dates_task,
    "tickets": tickets_task,
    "qa": qa_task,
    "entities": entities_task,
    "reviews": reviews_task,
}


def make_task(name: str, seed: int = SEED) -> Task:
    """Task ``name`` (a key of ``TASKS``), generated from ``seed``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name](seed)


def check_disjoint(task: Task) -> None:
    """Raise if a test input is also a training input, or the sizes are not the stated ones."""
    train_inputs = {ex.text_input for ex in task.train}
    shared = [ex.text_input for ex in task.test if ex.text_input in train_inputs]
    if shared or len(task.train) != POOL or len(task.test) != TESTS:
        raise AssertionError(f"{task.name}: {len(shared)} shared inputs, {len(task.train)} "
                             f"training and {len(task.test)} test examples")


# ---------------------------------------------------------------------------------------------
# A task of the user's own: two files

MAX_FILE_TESTS = 1_000  # test examples scored from a file (each is answered by every contender)


class FileTaskError(ValueError):
    """A task file that cannot be used, in words for the person who gave it."""


def file_task(train_path: str | Path, test_path: str | Path, metric: str | None = None) -> Task:
    """A task from two files of the user's (any format ``tunelab tune`` reads: CSV, JSON,
    JSONL), read and checked by tunelab's own parser, so a file the service refuses is refused
    here in the same words. The training pool is the training file in its order (a cell of
    size n trains on its first n examples); the test examples are the test file's, less any
    whose input is also a training input (a model is scored on inputs it was not trained on),
    at most ``MAX_FILE_TESTS``. ``metric``: ``exact_match`` or ``token_f1``; by default token
    F1 where the outputs look like summaries (``detect_task``), exact match otherwise. The kind
    is ``detect_task``'s (classification, summarisation, search) or ``other``."""
    from tunelab.data.parse import read_file
    from tunelab.data.prompt_format import SUMMARISATION, detect_task
    from tunelab.errors import DatasetError

    examples = {}
    for what, path in (("training", train_path), ("test", test_path)):
        try:
            examples[what] = read_file(path)
        except DatasetError as e:
            raise FileTaskError(f"The {what} file {Path(path).name} cannot be used:\n"
                                + "\n".join(f"- {p}" for p in e.problems)) from None
    train = examples["training"]
    trained = {ex.text_input for ex in train}
    test = [ex for ex in examples["test"] if ex.text_input not in trained]
    if not test:
        raise FileTaskError(f"Every input of the test file {Path(test_path).name} is also a "
                            "training input: give test examples the model is not trained on.")
    kind = detect_task([ex.text_input for ex in train], [ex.output for ex in train]) or "other"
    if metric is None:
        metric = TOKEN_F1 if kind == SUMMARISATION else EXACT
    if metric not in (EXACT, TOKEN_F1):
        raise FileTaskError(f"Unknown metric {metric!r}: choose {EXACT} or {TOKEN_F1}.")
    dropped = len(examples["test"]) - len(test)
    name = task_name_of(train_path)
    return Task(name, kind, metric,
                f"{Path(train_path).name} ({len(train)} examples) → scored on "
                f"{Path(test_path).name} ({min(len(test), MAX_FILE_TESTS)} test inputs"
                + (f"; {dropped} also in the training file left out" if dropped else "") + ")",
                train, test[:MAX_FILE_TESTS])


def task_name_of(train_path: str | Path) -> str:
    """The name a file task goes by in the table and its runs' folders: the training file's
    name without its extension and a ``-train`` / ``_train`` ending, in letters, digits, ``-``
    and ``_`` (``file-`` before it where it would be one of the suite's names)."""
    stem = Path(train_path).stem
    for ending in ("-train", "_train", ".train"):
        if stem.lower().endswith(ending) and len(stem) > len(ending):
            stem = stem[: -len(ending)]
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem).strip("_") or "file"
    return f"file-{stem}" if stem in TASKS else stem
