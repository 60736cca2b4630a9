"""`meterkit alerts` (list, filter, acknowledge) on both stores, and the rules file: read as JSON or TOML,
checked at the edge like the concentrator's settings (`meterkit concentrator --alert-rules FILE`)."""

from __future__ import annotations

import json

import pytest

from meterkit.cli import main as meterkit
from meterkit.headend.alertrules import AlertRules, AlertRulesError, load_rules, rules_table
from meterkit.store import open_store
from meterkit.store.records import AlertRecord

A, B = bytes.fromhex("a1" * 8), bytes.fromhex("b2" * 8)


def listed(capsys, *argv) -> list[dict]:
    assert meterkit(["alerts", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_alerts_fold_list_filter_and_ack(store_db, capsys):
    db = str(store_db)
    with open_store(store_db) as s:
        s.add_alerts([AlertRecord("auth-failure", "warning", A, "", 5, 10.0, 12.0, "bad-signature"),
                      AlertRecord("auth-failure", "warning", b"", "10.0.0.9", 5, 10.0, 12.0, "bad-signature"),
                      AlertRecord("tamper", "critical", B, "", 1, 11.0, 11.0, "sensor fault")])
        s.add_alerts([AlertRecord("auth-failure", "warning", A, "", 995, 13.0, 20.0, None)])  # a flood goes on
        s.commit()
        with pytest.raises(ValueError, match="severity"):
            s.add_alerts([AlertRecord("x", "urgent", A, "", 1, 1.0, 1.0)])
        s.rollback()
    rows = listed(capsys, "--db", db)
    assert [(r["rule"], r["device"], r["source"], r["count"]) for r in rows] == [
        ("auth-failure", A.hex(), None, 1000), ("auth-failure", None, "10.0.0.9", 5), ("tamper", B.hex(), None, 1)]
    assert rows[0]["first_at"] == 10.0 and rows[0]["last_at"] == 20.0 and rows[0]["detail"] == "bad-signature"
    assert [r["rule"] for r in listed(capsys, "--db", db, "--severity", "critical")] == ["tamper"]
    assert meterkit(["alerts", "--db", db, "ack", str(rows[0]["id"]), "--by", "alice"]) == 0
    assert f"alert {rows[0]['id']} acknowledged" in capsys.readouterr().out
    assert meterkit(["alerts", "ack", str(rows[0]["id"]), "--db", db]) == 1  # not open any more
    assert "no open alert" in capsys.readouterr().err
    assert [r["id"] for r in listed(capsys, "--db", db)] == [rows[1]["id"], rows[2]["id"]]
    [acked] = listed(capsys, "--db", db, "--state", "acknowledged")
    assert acked["acked_by"] == "alice" and acked["count"] == 1000
    with open_store(store_db) as s:  # the next occurrence opens a new alert
        s.add_alerts([AlertRecord("auth-failure", "warning", A, "", 1, 30.0, 30.0, "again")])
        s.commit()
    assert len(listed(capsys, "--db", db, "--state", "all")) == 4
    assert meterkit(["alerts", "--db", db]) == 0
    text = capsys.readouterr().out
    assert "critical  tamper" in text and "from 10.0.0.9" in text


def test_rules_files_json_and_toml_and_what_is_wrong(tmp_path, capsys):
    j = tmp_path / "rules.json"
    j.write_text(json.dumps({"auth-failure": {"count": 10}, "firmware": {"allowed": ["meterkit-0.14.0"]},
                             "consumption-drop": {"enabled": False}}))
    r = load_rules(j)
    assert (r.auth_failure.count, r.auth_failure.window_s, r.firmware.allowed, r.consumption_drop.enabled) == \
        (10, 600.0, ("meterkit-0.14.0",), False)
    t = tmp_path / "rules.toml"
    t.write_text('[replay]\nseverity = "critical"\n[clock-jump]\nahead_s = 300\n')
    r = load_rules(t)
    assert r.replay.severity == "critical" and r.clock_jump.ahead_s == 300 and r.replay.count == 3
    assert rules_table(AlertRules())["frame-flood"] == {"enabled": True, "severity": "warning", "count": 3000,
                                                         "window_s": 60.0}
    for text, why in (('{"auth-failures": {}}', "unknown rule 'auth-failures'"),
                      ('{"replay": {"cout": 3}}', "unknown setting(s) cout"),
                      ('{"replay": {"count": 0}}', "count must be at least 1"),
                      ('{"replay": {"count": 2.5}}', "count must be a whole number"),
                      ('{"tamper": {"severity": "urgent"}}', "severity must be one of info, warning, critical"),
                      ('{"consumption-drop": {"drop_ratio": 2}}', "drop_ratio must be at least 0 and at most 1"),
                      ('{"consumption-drop": {"window_s": 100}}', "at least two bucket_s"),
                      ('[1]', "want a table of rules"), ('{"replay": ', "not valid JSON")):
        j.write_text(text)
        with pytest.raises(AlertRulesError, match=why.replace("(", r"\(").replace(")", r"\)")):
            load_rules(j)
    assert meterkit(["keys", "new", "--out", str(tmp_path / "keys")]) == 0
    capsys.readouterr()
    assert meterkit(["concentrator", "--db", str(tmp_path / "h.db"), "--key", str(tmp_path / "keys" /
                     "headend.key.pem"), "--listen", "127.0.0.1:0", "--alert-rules", str(j)]) == 2
    assert "meterkit concentrator: " in (err := capsys.readouterr().err) and "not valid JSON" in err
