"""The demo's billing step: its run crosses the billing boundary, and it bills (or says why it cannot)."""

import datetime as dt

from meterkit.sim import demo, demo_firmware
from meterkit.store import open_store


def test_every_demo_run_crosses_the_billing_boundary():
    assert dt.datetime.fromtimestamp(demo.BILLING_END, dt.timezone.utc) == \
        dt.datetime(2026, 10, 31, 23, 0, tzinfo=dt.timezone.utc)  # 2026-11-01 00:00 CET
    assert demo.demo_start(24.0) == int(dt.datetime(2026, 10, 31, 12, 0, tzinfo=dt.timezone.utc).timestamp())
    for hours in (0.5, 1.0, 2.0, 6.0, 24.0, 48.0):
        start = demo.demo_start(hours)
        assert start < demo.BILLING_END < start + hours * 3600, hours
        assert start % 60 == 0


def test_faults_and_their_log_lines_read_in_utc():
    start = demo.demo_start(24.0)
    assert demo._utc_log(" 6.00 h  cut_link meter-2", start) == " 6.00 h (18:00 UTC)  cut_link meter-2"
    assert demo._utc_log("14.00 h  power_cut meter-5", start) == "14.00 h (02:00 UTC)  power_cut meter-5"
    assert demo._utc_log("meter-5 exited with 1: boom", start) == "meter-5 exited with 1: boom"


def test_no_bill_is_reported_not_raised(tmp_path):
    open_store(tmp_path / "meterkit.db").close()  # a database without the demo's meters
    text, files, failed = demo.bill_and_day(tmp_path / "meterkit.db", tmp_path)
    assert not files
    assert text.startswith(f"NO BILL for {demo.BILL_METER}, period {demo.BILL_PERIOD}: no meter '{demo.BILL_METER}'")
    assert failed[0] == text
    assert failed[1].startswith(f"NO PLOT of {demo.PLOT_DAY} for {demo.BILL_METER}: no meter")
    assert not list(tmp_path.glob("*.csv")) and not list(tmp_path.glob("*.png"))


def test_a_short_demo_ends_with_a_bill_and_a_tariff_plot(tmp_path, capsys):
    """The real firmware under the Unix port, one virtual hour across the billing boundary: every meter sends
    its snapshot, and the demo bills the period from the commissioning hello to it."""
    rc = demo.run_demo(hours=1.0, out=str(tmp_path))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "6 of 6 meters sent their billing snapshot" in out
    assert "Bill for meter " in out and f"({demo.BILL_METER}), period {demo.BILL_PERIOD}" in out
    assert "energy from signed snapshot seq" in out and "at commissioning (first-boot hello seq 0)" in out
    assert "NO BILL" not in out and "NO PLOT" not in out
    # two-way control, compressed into the hour: meter-3's disconnect and the group's DR event, both answered
    assert "meter-3: disconnected remotely (b 1>0) at " in out, out
    assert "demand-response event 1: group 1, shed" in out and "meters: 3 accepted" in out, out
    # the firmware rollout: a canary, then the rest; every meter confirmed the image and its hello names it
    assert "signed by the firmware key): 2 waves, done" in out, out
    assert out.count(f"its last hello names {demo_firmware.VERSION}") == 6, out
    csv_rows = (tmp_path / f"bill-{demo.BILL_METER}-{demo.BILL_PERIOD}.csv").read_text().splitlines()
    assert csv_rows[0].startswith("period,device,meter,register") and len(csv_rows) == 1 + 9
    assert all(",snapshot," in r for r in csv_rows[1:])
    # honest operations (commissioning, unset clocks set, the disconnect story, a DR shed, a firmware rollout)
    # raise no security alert
    with open_store(tmp_path / "meterkit.db") as db:
        assert db.alerts() == [], [(a.rule, a.detail) for a in db.alerts()]
    assert "security alerts: none" in out
    png = tmp_path / f"tariff-day-{demo.BILL_METER}-{demo.PLOT_DAY}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
