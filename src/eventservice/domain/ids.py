"""Event range identifiers: ``<taskID>-<PandaID>-<fileID>-<startEvent>-<attemptNr>``."""

from __future__ import annotations

from dataclasses import dataclass

from eventservice.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class EventRangeID:
    """The parsed form of an ``eventRangeID`` (DESIGN §5)."""

    task_id: int
    panda_id: int
    file_id: int
    start_event: int
    attempt_nr: int

    def __str__(self) -> str:
        return f"{self.task_id}-{self.panda_id}-{self.file_id}-{self.start_event}-{self.attempt_nr}"

    @classmethod
    def parse(cls, text: object) -> EventRangeID:
        """Parse an ID string; raise :class:`InvalidInput` naming what is wrong."""
        if not isinstance(text, str):
            raise InvalidInput(f"eventRangeID must be a string, got {type(text).__name__}")
        parts = text.split("-")
        if len(parts) != 5:
            raise InvalidInput(
                f"eventRangeID {text!r} must have 5 dash-separated fields "
                "<taskID>-<PandaID>-<fileID>-<startEvent>-<attemptNr>"
            )
        try:
            numbers = [int(part) for part in parts]
        except ValueError:
            raise InvalidInput(f"eventRangeID {text!r} has a non-integer field") from None
        if any(n < 0 for n in numbers) or numbers[4] < 1:
            raise InvalidInput(f"eventRangeID {text!r} has a field out of range")
        return cls(*numbers)
