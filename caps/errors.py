"""What the caps refuse a call with: a cap would be exceeded (429), too many calls in flight
(429), the counter store unreachable (503). The messages keep the seed's wording."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from caps.models import SetBy
from caps.rules import MICROS_PER_CENT
from caps.windows import SESSION, iso_z


def _dollars(micros: int) -> str:
    """$0.036, $10.00: at least cents, up to 1/100 of a cent, rounded down."""
    text = f"{(Decimal(micros) / 1_000_000).quantize(Decimal('0.0001'), rounding=ROUND_DOWN)}"
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


class CapExceeded(Exception):
    """A cap would be exceeded by this call: the proxy answers 429 with `Retry-After`."""

    def __init__(
        self,
        *,
        cap_type: str,
        limit_type: str,
        current_usage: int | Decimal,
        limit: int | Decimal,
        reset_time: datetime | None,
        retry_after_seconds: int,
        needed: int | Decimal,
        set_by: str = SetBy.USER,  # type: ignore[assignment]  # Django's Choices are untyped here
    ) -> None:
        self.cap_type = cap_type
        self.limit_type = limit_type
        self.current_usage = current_usage  # cost: cents as a Decimal, like max_cost_cents
        self.limit = limit
        self.reset_time = reset_time
        self.retry_after_seconds = retry_after_seconds
        self.needed = needed  # this call's estimate, in the same unit
        self.set_by = set_by
        self.message = self._message()
        super().__init__(self.message)

    def _message(self) -> str:
        # The seed's UsageCapError text: "Daily usage cap exceeded: 1000/1000 requests. Resets at …"
        if self.limit_type == "cost":
            to_micros = MICROS_PER_CENT
            usage = f"${_dollars(int(self.current_usage * to_micros))}"
            usage += f"/${_dollars(int(self.limit * to_micros))} cost"
            need = f"${_dollars(int(self.needed * to_micros))}"
        else:
            usage = f"{self.current_usage}/{self.limit} {self.limit_type}"
            need = f"{self.needed} {self.limit_type}"
        if self.cap_type == SESSION:
            # "Session cost cap exceeded: $2.00/$2.00. Start a new session." (never resets)
            text = f"Session cost cap exceeded: {usage.removesuffix(' cost')}"
        else:
            text = f"{self.cap_type.capitalize()} usage cap exceeded: {usage}"
        if self.set_by == "team":
            text = f"Your team's {text[0].lower()}{text[1:]}"
        if self.current_usage < self.limit:
            # Under the limit, but this call's estimate does not fit in what is left.
            text += f" (this request needs about {need})"
        if self.reset_time is None:
            return f"{text}. Start a new session."
        return f"{text}. Resets at {iso_z(self.reset_time)}"

    def body(self) -> dict[str, Any]:
        """The seed's 429 body; a cost's usage and limit are cents (a JSON number)."""

        def number(value: int | Decimal) -> int | float:
            # JSON has one number type; cents keep their 4 decimals of micro-dollars.
            return value if isinstance(value, int) else float(value)

        return {
            "error": self.message,
            "cap_type": self.cap_type,
            "limit_type": self.limit_type,
            "current_usage": number(self.current_usage),
            "limit": number(self.limit),
            "reset_time": None if self.reset_time is None else iso_z(self.reset_time),
            "retry_after_seconds": self.retry_after_seconds,
        }


class CallsInFlight(Exception):
    """Too many of the user's calls in flight at once (`reason` "in_flight"), or too many
    uncovered ones ("uncovered"): the proxy answers 429 with `Retry-After: 1`, no cap named."""

    retry_after_seconds = 1

    def __init__(self, reason: str, limit: int) -> None:
        self.reason = reason
        self.limit = limit
        if reason == "in_flight":
            self.message = (
                f"Too many calls in flight: at most {limit} at once per user. "
                "Retry when one has finished."
            )
        else:
            self.message = (
                f"Too many calls in flight whose max_tokens exceeds what is left under your "
                f"usage caps: at most {limit} at once. Retry when it has finished, or lower "
                "max_tokens."
            )
        super().__init__(self.message)


class CapStoreUnavailable(Exception):
    """The counter store is unreachable and the failure mode says refuse (the proxy: 503)."""

    message = "Usage caps cannot be checked right now (counter store unavailable); try again."
