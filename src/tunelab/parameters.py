"""The parameter sets a user chooses, typed once: their limits and what each one means.

``TunedModelSettings`` (display name, description, sampling defaults) and
``HyperparameterSettings`` (epochs, batch size, learning rate) are the single source that
everything else derives from: the server's checks (``problems``), the API schemas' descriptions
and bounds (``api_field``), the CLI's ``--help`` (``cli_help``) and the limits the Studio's
forms enforce (``GET /studio/limits``, from ``studio_limits``). Changing a limit here changes
it everywhere.

The models document and bound; they are not used to parse requests: the server reads a
request leniently and then reports **every** problem at once, in words that name the field and
what to do (``problems``), instead of stopping at pydantic's first error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from annotated_types import Ge, Gt, Le, Lt, MaxLen
from pydantic import BaseModel, Field
from pydantic.alias_generators import to_camel

from tunelab.errors import Problem

MAX_DISPLAY_NAME = 40


class TunedModelSettings(BaseModel):
    """What a user names and sets on a tuned model (at create, and by update)."""

    display_name: str | None = Field(
        None, max_length=MAX_DISPLAY_NAME,
        description="A name to show for the tuned model; its id is derived from it unless "
        "one is given.")
    description: str | None = Field(
        None, description="What the tuned model is for (the administrator may cap its "
        "length: TUNELAB_MAX_DESCRIPTION_CHARS).")
    temperature: float | None = Field(
        None, ge=0, le=2, description="Default sampling temperature of the tuned model (0: "
        "greedy); unset: the base model's.")
    top_p: float | None = Field(
        None, gt=0, le=1, description="Default nucleus-sampling mass; unset: the base model's.")
    top_k: int | None = Field(
        None, ge=1, description="Default number of most likely tokens sampled from; unset: "
        "the base model's.")


class HyperparameterSettings(BaseModel):
    """The training choices; each one left unset is chosen from the data
    (``training/auto.py``), each one given is used exactly."""

    epoch_count: int | None = Field(
        None, ge=1, le=1000, description="Passes over the training examples; unset: chosen "
        "from the data (5 for 100 examples or more).")
    batch_size: int | None = Field(
        None, ge=1, le=512, description="Examples per optimizer step; unset: chosen from the "
        "data's size and lengths.")
    learning_rate: float | None = Field(
        None, gt=0, le=1000, description="Peak learning rate; unset: the base model's "
        "recommended rate, with warmup and cosine decay (constant for a classifier's "
        "labels). Give this or "
        "learningRateMultiplier, not both.")
    learning_rate_multiplier: float | None = Field(
        None, gt=0, le=1000, description="Times the base model's recommended learning rate, "
        "instead of learningRate.")


@dataclass(frozen=True)
class Bounds:
    """A field's limits, as declared on its model."""

    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None
    exclusive_maximum: float | None = None
    max_length: int | None = None
    whole: bool = False  # an integer field

    def text(self) -> str:
        """The range in words: ``1 to 1000``, ``above 0 and at most 1``, ``at least 1``."""
        fmt = (lambda v: f"{v:g}") if not self.whole else (lambda v: f"{int(v)}")
        if self.max_length is not None:
            return f"at most {self.max_length} characters"
        low = (f"{fmt(self.minimum)}" if self.minimum is not None else
               f"above {fmt(self.exclusive_minimum)}" if self.exclusive_minimum is not None
               else None)
        high = self.maximum if self.maximum is not None else self.exclusive_maximum
        if low is not None and high is not None:
            if self.minimum is not None and self.maximum is not None:
                return f"{low} to {fmt(high)}"
            return f"{low} and at most {fmt(high)}"
        if low is not None:
            return f"at least {low}" if self.minimum is not None else low
        return f"at most {fmt(high)}" if high is not None else ""

    def holds(self, value: Any) -> bool:
        if self.max_length is not None:
            return not isinstance(value, str) or len(value) <= self.max_length
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.whole and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return not (
            (self.minimum is not None and value < self.minimum)
            or (self.exclusive_minimum is not None and value <= self.exclusive_minimum)
            or (self.maximum is not None and value > self.maximum)
            or (self.exclusive_maximum is not None and value >= self.exclusive_maximum))


def bounds(model: type[BaseModel], name: str) -> Bounds:
    """The limits declared on ``model``'s field ``name``."""
    info = model.model_fields[name]
    found: dict[str, Any] = {"whole": int in getattr(info.annotation, "__args__", ())
                             or info.annotation is int}
    for m in info.metadata:
        if isinstance(m, Ge):
            found["minimum"] = m.ge
        elif isinstance(m, Gt):
            found["exclusive_minimum"] = m.gt
        elif isinstance(m, Le):
            found["maximum"] = m.le
        elif isinstance(m, Lt):
            found["exclusive_maximum"] = m.lt
        elif isinstance(m, MaxLen):
            found["max_length"] = m.max_length
    return Bounds(**found)


def wire_name(name: str) -> str:
    """The field's name on the wire and in messages (``epoch_count`` → ``epochCount``)."""
    return to_camel(name)


def problems(model: type[BaseModel], values: dict[str, Any], prefix: str = "") -> list[Problem]:
    """Every value in ``values`` (by field name; ``None`` = unset) outside its field's limits,
    one ``Problem`` each: ``field`` is ``prefix`` + the wire name, ``message`` the rest of the
    sentence (``f"{p.field} {p.message}"``: "topP must be a number above 0 and at most 1, got
    0")."""
    out = []
    for name, value in values.items():
        if value is None:
            continue
        b = bounds(model, name)
        if b.holds(value):
            continue
        if b.max_length is not None:
            message = f"is {len(value)} characters; the limit is {b.max_length}"
        else:
            kind = "a whole number" if b.whole else "a number"
            message = f"must be {kind} {_range_words(b)}, got {value!r}"
        out.append(Problem(message, field=prefix + wire_name(name)))
    return out


def _range_words(b: Bounds) -> str:
    text = b.text()
    return f"from {text}" if text[:1].isdigit() else text


def sentence(p: Problem) -> str:
    """A field's problem as one sentence: its field, then what is wrong."""
    return f"{p.field} {p.message}"


def description(model: type[BaseModel], name: str) -> str:
    return model.model_fields[name].description or ""


def cli_help(model: type[BaseModel], name: str) -> str:
    """A CLI option's help: the field's description and its range."""
    words = _range_words(bounds(model, name))
    rng = f" {words[0].upper()}{words[1:]}." if words else ""
    return description(model, name).rstrip(".") + "." + rng


def api_field(model: type[BaseModel], name: str) -> Any:
    """An optional API request field documented like ``model``'s: the same description and,
    in the OpenAPI schema, the same bounds. Requests are not rejected by it: the service
    reports every out-of-range value at once (``problems``)."""
    return Field(None, description=description(model, name),
                 json_schema_extra=_schema_bounds(bounds(model, name)) or None)


def _schema_bounds(b: Bounds) -> dict[str, Any]:
    keys = {"minimum": b.minimum, "exclusiveMinimum": b.exclusive_minimum,
            "maximum": b.maximum, "exclusiveMaximum": b.exclusive_maximum,
            "maxLength": b.max_length}
    return {k: v for k, v in keys.items() if v is not None}


def studio_limits(max_description_chars: int = 0) -> dict[str, Any]:
    """The limits of every field the Studio's forms edit, by wire name, as JSON-schema
    keywords plus ``description``, ``integer`` and ``range`` (in words); the description's
    length limit is the server's setting (0: none)."""
    out: dict[str, Any] = {}
    for model in (TunedModelSettings, HyperparameterSettings):
        for name in model.model_fields:
            b = bounds(model, name)
            entry = {**_schema_bounds(b), "integer": b.whole,
                     "description": description(model, name), "range": b.text()}
            if name == "description" and max_description_chars:
                entry["maxLength"] = max_description_chars
                entry["range"] = f"at most {max_description_chars} characters"
            out[wire_name(name)] = entry
    return out
