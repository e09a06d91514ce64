"""The demo task: turn a product review into a one-line JSON record.

Input:  a short customer review in free text.
Output: ``{"product": "<product>", "sentiment": "positive|negative|neutral", "rating": N}``

A small instruct model answers such a review in prose (or in JSON of its own shape) zero-shot;
after tuning it answers with exactly this record. Generated deterministically, so the bundled
``reviews.jsonl`` can be rebuilt with ``python -m tunelab.examples.reviews``; the held-out
prompts use products and phrasings that never occur in the training file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tunelab.data.examples import Example

TRAIN_PRODUCTS = [
    "headphones",
    "blender",
    "backpack",
    "desk lamp",
    "keyboard",
    "running shoes",
    "coffee maker",
    "phone case",
    "water bottle",
    "office chair",
    "toaster",
    "umbrella",
    "smartwatch",
    "tent",
    "yoga mat",
    "monitor",
    "vacuum cleaner",
    "electric kettle",
    "sunglasses",
    "router",
]
HELDOUT_PRODUCTS = ["air fryer", "bike helmet", "webcam", "hair dryer", "suitcase", "drone"]

OPENERS = [
    "I bought the {p} last month.",
    "Got this {p} as a gift.",
    "Ordered the {p} online.",
    "We have used the {p} for a few weeks.",
    "My {p} arrived on Tuesday.",
    "Picked up the {p} on sale.",
]
HELDOUT_OPENERS = ["After two weeks with the {p}, here is my take.", "Just tried the new {p}."]

BODIES = {
    "positive": [
        ("Works perfectly and feels solid.", 5),
        ("Really happy with it, would buy again.", 5),
        ("Great value for the price.", 4),
        ("Does exactly what it promises.", 4),
        ("Better than I expected, no complaints.", 5),
        ("Quality is excellent.", 5),
    ],
    "negative": [
        ("It broke after three days.", 1),
        ("Total waste of money.", 1),
        ("Stopped working within a week and support never answered.", 1),
        ("Cheap materials, returned it.", 2),
        ("Very disappointed with the quality.", 2),
        ("Arrived damaged and smells odd.", 1),
    ],
    "neutral": [
        ("It is okay, nothing special.", 3),
        ("Does the job, but the design is average.", 3),
        ("Fine for the price, not more.", 3),
        ("Some good points, some bad ones.", 3),
    ],
}
HELDOUT_BODIES = {
    "positive": [("Absolutely love it, works like a charm.", 5)],
    "negative": [("Fell apart on the first use, avoid.", 1)],
    "neutral": [("Average at best, neither good nor bad.", 3)],
}


def _record(product: str, sentiment: str, rating: int) -> str:
    return json.dumps({"product": product, "sentiment": sentiment, "rating": rating})


def make_examples(n: int, seed: int = 0, heldout: bool = False) -> list[Example]:
    rng = random.Random(seed)
    products = HELDOUT_PRODUCTS if heldout else TRAIN_PRODUCTS
    openers = HELDOUT_OPENERS if heldout else OPENERS
    bodies = HELDOUT_BODIES if heldout else BODIES
    out: list[Example] = []
    seen: set[str] = set()
    i = -1
    while len(out) < n:
        i += 1
        p = products[i % len(products)] if heldout else rng.choice(products)
        sentiment = (
            ["positive", "negative", "neutral"][i % 3]
            if heldout
            else rng.choice(["positive", "positive", "negative", "negative", "neutral"])
        )
        body, rating = rng.choice(bodies[sentiment])
        text = f"{rng.choice(openers).format(p=p)} {body}"
        if text in seen:
            continue
        seen.add(text)
        out.append(Example(text, _record(p, sentiment, rating)))
    return out


def bundled_path() -> Path:
    return Path(__file__).with_name("reviews.jsonl")


def write_bundled(n: int = 120) -> Path:
    path = bundled_path()
    lines = [json.dumps({"text_input": e.text_input, "output": e.output}) for e in make_examples(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    print(write_bundled())
