"""The rating engine of invoicing: pure money arithmetic, no I/O.

``charges`` (what is sold), ``engine`` (rating usage), ``money`` (the one
rounding rule), ``proration`` (fees for part of a period). ``wire`` converts
to and from protobuf and is the only module here that imports it; it is not
re-exported so that importing this package never needs the generated code.
"""

from services.invoicing.rating.charges import MODELS, Charge, Tier
from services.invoicing.rating.engine import Rating, RatingDetail, Usage, rate
from services.invoicing.rating.money import (
    decimal_text,
    format_amount,
    minor_to_decimal,
    round_to_minor,
)
from services.invoicing.rating.proration import prorate, seconds_between

__all__ = [
    "MODELS",
    "Charge",
    "Rating",
    "RatingDetail",
    "Tier",
    "Usage",
    "decimal_text",
    "format_amount",
    "minor_to_decimal",
    "prorate",
    "rate",
    "round_to_minor",
    "seconds_between",
]
