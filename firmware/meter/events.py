# Event codes, one list for the whole meter; meter/profile.py EventLog (99.98.x) stores them, numbered.
SENSOR_FAULT = 1  # the chip is absent or does not hold its configuration; value: the reason
SENSOR_OK = 2  # the chip answered and holds its configuration
CHIP_RESET = 3  # the chip lost its configuration (brown-out), re-initialised; value: config read back
I2C_ERRORS = 4  # a run of I2C errors; value: errno of a diagnostic read
RESTORED = 5  # registers restored from a checkpoint at boot; value: checkpoint sequence number
STORE_CORRUPT = 6  # a damaged checkpoint slot was found (and skipped); value: count or reason
INTERNAL = 7  # an unexpected error in one sampling cycle (the loop went on); value: its repr
POWER_UP = 8  # the meter started; value: seconds since its last stored row or event (the outage, at most)
AUTH_FAIL = 9  # a head-end message was refused (forged, replayed, expired, malformed, for another meter); value: reason
OUTBOX_DROP = 10  # the outbox was full: the oldest unacknowledged frames were dropped; value: their count
CALENDAR_ACTIVATED = 11  # a passive TOU calendar became active at its activation instant; value: its name
CALENDAR_PASSIVE = 12  # a calendar command was accepted: passive calendar armed; value: activation instant
BILLING_END = 13  # a billing period ended (snapshot frozen, demand reset); value: the period end (UTC)
CLOCK_SET = 14  # the clock moved by more than the meter can account for; value: seconds (negative = back)
WATCHDOG_RESET = 15  # the last restart was the watchdog's (or a panic); value: the reset cause
OVER_CURRENT = 16  # |current| went above the board's alarms.over_current_ma (again after falling 10 % below); value: mA
OVER_VOLTAGE = 17  # the bus voltage went above alarms.over_voltage_mv (same hysteresis); value: mV
COMMAND_REFUSED = 18  # a signed command that is not exactly the schema was refused, nothing done; value: the reason
CLOCK_INVALID = 19  # the clock reads no usable time (from 2100, or at boot before what the meter recorded); value: it
# -- two-way control (issue 12) --
DISCONNECT_CONTROL = 20  # IC70 changed state; value: text "<transition letter> <old>><new>", e.g. "b 1>0"
LIMITER_TRIP = 21  # the limiter disconnected (transition g) after min_over; value: the power seen, W
LIMITER_RESTORE = 22  # under the threshold for min_under again; value: the power seen, W
LIMITER_SET = 23  # a limiter command was applied; value: the normal threshold, W
DR_ACCEPTED = 24  # a demand-response event was accepted; value: its id
DR_START = 25  # a demand-response event came into force; value: its id
DR_END = 26  # ... ended; value: its id
DR_OPT_OUT = 27  # the customer overrode a demand-response event with the button; value: its id
CONFIG_SET = 28  # a configuration command was applied; value: the argument keys set, text "1,3"
KEY_ROTATED = 29  # the head-end key was replaced; value: the new key's kid (hex)
REBOOT = 30  # a reboot command: restarting after its answer; value: the command counter
# -- firmware updates (issue 15, meter.fwupdate) --
FW_REFUSED = 31  # an update's manifest or payload was refused; value: the reason
FW_ACTIVATED = 32  # a verified image was set to boot (the meter restarts); value: its sequence number
FW_CONFIRMED = 33  # the new image metered and reported: confirmed, no rollback; value: its version text
FW_ROLLED_BACK = 34  # the new image's first boot failed: the bootloader ran the previous one; value: its seq
FW_KEY_INSTALLED = 35  # a rotation signed by the firmware key installed its successor; value: the new key's kid (hex)
