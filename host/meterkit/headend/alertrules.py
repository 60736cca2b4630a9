"""The security monitor's rules and thresholds (docs/alerts.md): one typed, checked value, AlertRules, with the
defaults an honest fleet never trips; `load_rules(path)` reads a JSON or TOML file of overrides
(`meterkit concentrator --alert-rules FILE`) and says exactly what is wrong with a bad one.

A file names rules by their alert names and sets only what it changes:

    {"auth-failure": {"count": 10, "window_s": 300},
     "firmware": {"allowed": ["meterkit-0.14.0"]},
     "consumption-drop": {"enabled": false}}
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from meterkit.store.api import SEVERITIES

RULES = ("auth-failure", "replay", "reboot", "watchdog", "clock-jump", "firmware", "tamper", "command-refused",
         "frame-flood", "connection-storm", "consumption-drop")


class AlertRulesError(ValueError):
    """A rules file or setting that cannot be used (the message names the rule and field)."""


@dataclass(frozen=True)
class CountRule:
    """Raised when `count` occurrences fall within `window_s` seconds (counted from the first of them)."""

    enabled: bool = True
    severity: str = "warning"
    count: int = 5
    window_s: float = 600.0


@dataclass(frozen=True)
class ClockRule:
    """A meter's clock moved without the head-end setting it (event CLOCK_SET of at least min_shift_s with no
    set-time command sent to it in the commanded_within_s before), reads a time it cannot use (CLOCK_INVALID),
    or a frame arrived from more than ahead_s in the future."""

    enabled: bool = True
    severity: str = "warning"
    min_shift_s: float = 60.0
    ahead_s: float = 900.0
    commanded_within_s: float = 3600.0


@dataclass(frozen=True)
class FirmwareRule:
    """A hello's firmware differs from the meter's previous one and is not expected (not in `allowed`, and no
    rollout expects it: Monitor.expect_firmware); with `allowed` set, any firmware not in it."""

    enabled: bool = True
    severity: str = "critical"
    allowed: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConsumptionRule:
    """Theft or bypass heuristic: over the last window_s the meter imported at most drop_ratio of its average
    over the baseline_s before (which was at least min_baseline_w), while every bucket_s bucket of the window
    had voltage of at least voltage_ratio of the baseline's nominal (90th percentile) and no relay open, load
    shed, demand-response or sensor flag."""

    enabled: bool = True
    severity: str = "warning"
    window_s: float = 7200.0
    baseline_s: float = 43200.0
    drop_ratio: float = 0.05
    min_baseline_w: float = 2.0
    voltage_ratio: float = 0.9
    bucket_s: float = 300.0


def _count(severity: str, count: int, window_s: float) -> Any:
    return field(default_factory=lambda: CountRule(True, severity, count, window_s))


@dataclass(frozen=True)
class AlertRules:
    """Every rule's settings (defaults: docs/alerts.md)."""

    auth_failure: CountRule = _count("warning", 5, 600.0)  # forged or malformed frames, per meter and source
    replay: CountRule = _count("warning", 3, 600.0)  # stored frames replayed elsewhere; a seq reused
    reboot: CountRule = _count("warning", 3, 21600.0)  # restarts no reboot command asked for
    watchdog: CountRule = _count("warning", 1, 3600.0)  # watchdog resets / panics
    clock_jump: ClockRule = field(default_factory=ClockRule)
    firmware: FirmwareRule = field(default_factory=FirmwareRule)
    tamper: CountRule = _count("critical", 3, 3600.0)  # chip resets (a sensor fault alone raises it at once)
    command_refused: CountRule = _count("info", 1, 3600.0)  # a meter answered a command no
    frame_flood: CountRule = _count("warning", 3000, 60.0)  # frames from one source or meter
    connection_storm: CountRule = _count("warning", 60, 60.0)  # connections from one source
    consumption_drop: ConsumptionRule = field(default_factory=ConsumptionRule)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_rule(f.name.replace("_", "-"), getattr(self, f.name))

    def rule(self, name: str) -> Any:
        """A rule's settings by its alert name ('auth-failure')."""
        return getattr(self, name.replace("-", "_"))


_LIMITS = {  # field -> (lowest, strictly above it, highest or None)
    "count": (1, False, None), "window_s": (0, True, None), "min_shift_s": (0, True, None),
    "ahead_s": (0, True, None), "commanded_within_s": (0, False, None), "baseline_s": (0, True, None),
    "drop_ratio": (0, False, 1), "min_baseline_w": (0, False, None), "voltage_ratio": (0, False, 1),
    "bucket_s": (1, False, None),
}


def _check_rule(name: str, rule: Any) -> None:
    for f in dataclasses.fields(rule):
        v = getattr(rule, f.name)
        where = f"alert rule {name}: {f.name}"
        if f.name == "enabled":
            if not isinstance(v, bool):
                raise AlertRulesError(f"{where} must be true or false, not {v!r}")
        elif f.name == "severity":
            if v not in SEVERITIES:
                raise AlertRulesError(f"{where} must be one of {', '.join(SEVERITIES)}, not {v!r}")
        elif f.name == "allowed":
            if not isinstance(v, tuple) or not all(isinstance(x, str) and x for x in v):
                raise AlertRulesError(f"{where} must be a list of firmware version texts, not {v!r}")
        else:
            low, strictly, high = _LIMITS[f.name]
            whole = f.name == "count"
            if isinstance(v, bool) or not isinstance(v, int if whole else (int, float)) or not math.isfinite(v):
                raise AlertRulesError(f"{where} must be {'a whole' if whole else 'a'} number, not {v!r}")
            if v < low or (strictly and v == low) or (high is not None and v > high):
                bound = f"above {low}" if strictly else f"at least {low}"
                raise AlertRulesError(f"{where} must be {bound}{f' and at most {high}' if high else ''}, not {v!r}")
    if isinstance(rule, ConsumptionRule):
        if rule.window_s < 2 * rule.bucket_s or rule.baseline_s < 2 * rule.bucket_s:
            raise AlertRulesError(f"alert rule {name}: window_s and baseline_s must be at least two bucket_s")


def rules_from(data: Any, what: str = "alert rules") -> AlertRules:
    """AlertRules from a mapping {rule name: {field: value}} (the defaults for what it leaves out)."""
    if not isinstance(data, dict):
        raise AlertRulesError(f"{what}: want a table of rules ({', '.join(RULES)}), not {type(data).__name__}")
    base = AlertRules()
    changes = {}
    for name, settings in data.items():
        if name not in RULES:
            raise AlertRulesError(f"{what}: unknown rule {name!r} (the rules: {', '.join(RULES)})")
        rule = base.rule(name)
        if not isinstance(settings, dict):
            raise AlertRulesError(f"{what}: rule {name} wants a table of settings, not {settings!r}")
        known = {f.name for f in dataclasses.fields(rule)}
        unknown = set(settings) - known
        if unknown:
            raise AlertRulesError(f"{what}: rule {name}: unknown setting(s) {', '.join(sorted(unknown))} (it has "
                                  f"{', '.join(sorted(known))})")
        if "allowed" in settings and isinstance(settings["allowed"], list):
            settings = {**settings, "allowed": tuple(settings["allowed"])}
        changes[name.replace("-", "_")] = dataclasses.replace(rule, **settings)
    try:
        return dataclasses.replace(base, **changes)
    except AlertRulesError as e:
        raise AlertRulesError(f"{what}: {e}") from None


def load_rules(path: str | Path) -> AlertRules:
    """The rules of a JSON file, or TOML when it ends in .toml; AlertRulesError says what is wrong."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise AlertRulesError(f"{p}: cannot read: {e.strerror or e}") from None
    try:
        data = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise AlertRulesError(f"{p}: not valid {'TOML' if p.suffix == '.toml' else 'JSON'}: {e}") from None
    return rules_from(data, str(p))


def rules_table(rules: AlertRules) -> dict[str, dict]:
    """{rule name: {field: value}}: the rules in force, as a file would say them."""
    return {name: dataclasses.asdict(rules.rule(name)) for name in RULES}
