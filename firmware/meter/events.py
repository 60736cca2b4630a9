# Event codes, one list for the whole meter (the 99.98.x event log of a later issue stores them).
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
