"""Green Button (NAESB REQ.21 ESPI) export of one meter's load profile, for its customer: `meterkit export
--green-button`. docs/green-button.md is the user's guide (what is exported, the format, what is left out).

    espi.py       the ESPI resources and codes (ReadingType, IntervalBlock, IntervalReading, LocalTimeParameters)
    readings.py   interval readings from the stored load-profile rows (gaps, irregular rows, daily blocks)
    localtime.py  LocalTimeParameters from the meter's POSIX TZ (ESPI's DstRuleType bit maps)
    prices.py     the cost of each interval, from meterkit.billing's price file and TOU calendar
    atom.py       the Atom feed writer (xml.etree)
    export.py     one export: the store in, an Export (feed, summary) out

May import: meter (tou, civil, messages), meterkit.billing, the store's interface, meterkit.timefmt, the standard
library. Not the head-end, the CLI or SQL.
"""

from meterkit.integrations.greenbutton.errors import GreenButtonError
from meterkit.integrations.greenbutton.export import Export, green_button
from meterkit.integrations.greenbutton.localtime import local_time_parameters

__all__ = ["Export", "GreenButtonError", "green_button", "local_time_parameters"]
