"""Value domains of config keys, declared once, in the annotation of the constructor parameter (or
schema field) that receives the key:

    def __init__(self, task_names, task_weights, *, mode: Literal["loop", "batched"] = "loop",
                 reg_eps: Annotated[float, Range(ge=0)] = 1e-4, hidden: Annotated[list[PosInt], Len(min=1)] = (64,))

Validation reads these annotations (:func:`mtl_cli.config.typecheck.value_problem`), so a value
outside its domain is refused with the key, the value and the allowed values before anything is
built; constructors need not (and do not) repeat the checks. ``Literal`` lists allowed values,
:class:`Range` bounds a number, :class:`Len` the length of a list, :class:`Check` states any other
rule as a predicate with its text, and :class:`Text` marks a string that may be anything (a path,
a column name) with what it is. Short aliases for the common domains follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Callable


class Domain:
    """A rule on a value that already has the right type."""

    def ok(self, value: Any) -> bool:
        raise NotImplementedError

    def text(self) -> str:
        """What is allowed, to follow a type name: ``>= 1``, ``with at least 1 item``."""
        raise NotImplementedError


def _num(v: float) -> str:
    return repr(v) if isinstance(v, float) and not float(v).is_integer() else str(int(v))


@dataclass(frozen=True)
class Range(Domain):
    """``ge <= v``, ``gt < v``, ``v <= le``, ``v < lt`` (the bounds given); NaN never fits."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def ok(self, value: Any) -> bool:
        v = float(value)
        if v != v:  # NaN
            return False
        return (
            (self.ge is None or v >= self.ge)
            and (self.gt is None or v > self.gt)
            and (self.le is None or v <= self.le)
            and (self.lt is None or v < self.lt)
        )

    def text(self) -> str:
        parts = []
        for op, b in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt)):
            if b is not None:
                parts.append(f"{op} {_num(b)}")
        return " and ".join(parts)


@dataclass(frozen=True)
class Len(Domain):
    """A list with at least ``min`` and at most ``max`` items."""

    min: int | None = None
    max: int | None = None

    def ok(self, value: Any) -> bool:
        n = len(value)
        return (self.min is None or n >= self.min) and (self.max is None or n <= self.max)

    def text(self) -> str:
        if self.min is not None and self.max is not None:
            return f"with {self.min} to {self.max} items" if self.min != self.max else f"with {self.min} items"
        if self.min is not None:
            return f"with at least {self.min} item{'s' if self.min != 1 else ''}"
        return f"with at most {self.max} items"


@dataclass(frozen=True)
class Check(Domain):
    """Any other rule: ``fn(value) -> bool`` and the text of what is allowed (or a function giving
    it, for a list only known at run time, such as a registry's names)."""

    fn: Callable[[Any], bool]
    what: str | Callable[[], str]

    def ok(self, value: Any) -> bool:
        try:
            return bool(self.fn(value))
        except (TypeError, ValueError):
            return False

    def text(self) -> str:
        return self.what() if callable(self.what) else self.what


@dataclass(frozen=True)
class Text(Domain):
    """A free string (a path, a column name): every value of the type fits; ``what`` says what it is."""

    what: str

    def ok(self, value: Any) -> bool:
        return True

    def text(self) -> str:
        return f"({self.what})"


#: integers >= 1 (counts, sizes, steps)
PosInt = Annotated[int, Range(ge=1)]
#: integers >= 0 (seeds, counts that may be 0)
NonNegInt = Annotated[int, Range(ge=0)]
#: numbers > 0 (rates, temperatures, epsilons)
Positive = Annotated[float, Range(gt=0)]
#: numbers >= 0 (dropout-free amounts, penalties)
NonNeg = Annotated[float, Range(ge=0)]
#: numbers in [0, 1]
Unit = Annotated[float, Range(ge=0, le=1)]
#: numbers in [0, 1) (dropout)
Dropout = Annotated[float, Range(ge=0, lt=1)]
#: a seed
Seed = Annotated[int, Range(ge=0)]
