"""The one error of a Green Button export: what cannot be exported, and why."""


class GreenButtonError(Exception):
    """An export that cannot be made: unknown meter, no rows in the period, a time zone or price ESPI cannot
    express. The message says what to change."""
