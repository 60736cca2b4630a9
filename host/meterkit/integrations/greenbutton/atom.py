"""The Atom feed of a Green Button export: one entry per ESPI resource, linked as the ESPI examples link them.

    feed                                  id, title, updated, link self
      entry UsagePoint                    self RetailCustomer/C/UsagePoint/1, up .../UsagePoint,
                                          related .../UsagePoint/1/MeterReading, related LocalTimeParameters/1
      entry LocalTimeParameters           self LocalTimeParameters/1, up LocalTimeParameters
      entry MeterReading k (1 import, 2 export)
                                          self .../MeterReading/k, up .../MeterReading,
                                          related .../MeterReading/k/IntervalBlock, related ReadingType/k
      entry ReadingType k                 self ReadingType/k, up ReadingType
      entry IntervalBlock j of reading k  self .../MeterReading/k/IntervalBlock/j, up .../MeterReading/k/IntervalBlock

C is the meter's device id (an export is one meter's). Each resource sits in <content> in the ESPI namespace,
its elements in the order espi.xsd's sequences give. Entry ids are name-based UUIDs (RFC 4122 version 5) of the
device and the resource's path, so exporting the same data again gives the same ids.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import BinaryIO

from meterkit.integrations.greenbutton import espi
from meterkit.timefmt import utc_text

_UUID_NS = uuid.UUID("6f1c1d3a-6d65-7465-726b-697420677265")  # meterkit's namespace for name-based entry ids


@dataclass
class Feed:
    """Everything one export writes."""

    device: bytes
    meter_name: str | None
    start: int  # the first reading's start (UTC s)
    end: int  # the last reading's end
    local_time: espi.LocalTimeParameters
    meter_readings: list[espi.MeterReadingSet]
    updated: int  # when the export was made (UTC s): Atom's updated and published


def _sub(parent: ET.Element, tag: str, text: object = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = str(text)
    return el


class _Writer:
    def __init__(self, feed: Feed):
        self.feed = feed
        self.dev = feed.device.hex()
        self.usage_point = f"RetailCustomer/{self.dev}/UsagePoint/1"
        self.stamp = utc_text(feed.updated)
        self.root = ET.Element("feed", {"xmlns": espi.ATOM_NS})

    def entry_id(self, path: str) -> str:
        return f"urn:uuid:{uuid.uuid5(_UUID_NS, f'{self.dev}/{path}')}"

    def entry(self, self_href: str, up: str, related: list[str], title: str, resource: str) -> ET.Element:
        """An entry; returns its ESPI resource element (in <content>) for the caller to fill."""
        e = _sub(self.root, "entry")
        _sub(e, "id", self.entry_id(self_href))
        _sub(e, "link", rel="self", href=self_href)
        _sub(e, "link", rel="up", href=up)
        for href in related:
            _sub(e, "link", rel="related", href=href)
        _sub(e, "title", title)
        content = _sub(e, "content")
        res = _sub(content, resource, xmlns=espi.ESPI_NS)
        _sub(e, "published", self.stamp)
        _sub(e, "updated", self.stamp)
        return res

    def head(self) -> None:
        f = self.feed
        who = f"{self.dev} ({f.meter_name})" if f.meter_name else self.dev
        _sub(self.root, "id", self.entry_id("feed"))
        _sub(self.root, "title", f"meterkit Green Button export: meter {who}, {utc_text(f.start)} .. {utc_text(f.end)}")
        _sub(self.root, "updated", self.stamp)
        _sub(self.root, "link", rel="self", href=f"RetailCustomer/{self.dev}/UsagePoint")

    def usage_point_entry(self) -> None:
        up = self.entry(self.usage_point, f"RetailCustomer/{self.dev}/UsagePoint",
                        [f"{self.usage_point}/MeterReading", "LocalTimeParameters/1"],
                        self.feed.meter_name or f"meter {self.dev}", "UsagePoint")
        cat = _sub(up, "ServiceCategory")
        _sub(cat, "kind", espi.SERVICE_ELECTRICITY)

    def local_time_entry(self) -> None:
        lt = self.feed.local_time
        el = self.entry("LocalTimeParameters/1", "LocalTimeParameters", [], f"local time: {lt.source}",
                        "LocalTimeParameters")
        _sub(el, "dstEndRule", f"{lt.dst_end_rule:08X}")
        _sub(el, "dstOffset", lt.dst_offset)
        _sub(el, "dstStartRule", f"{lt.dst_start_rule:08X}")
        _sub(el, "tzOffset", lt.tz_offset)

    def meter_reading_entries(self, k: int, mr: espi.MeterReadingSet) -> None:
        rt = mr.reading_type
        base = f"{self.usage_point}/MeterReading/{k}"
        self.entry(base, f"{self.usage_point}/MeterReading", [f"{base}/IntervalBlock", f"ReadingType/{k}"],
                   rt.title, "MeterReading")
        el = self.entry(f"ReadingType/{k}", "ReadingType", [], f"{rt.title}, mWh per {rt.interval_s} s",
                        "ReadingType")
        _sub(el, "accumulationBehaviour", espi.ACCUMULATION_DELTA)
        _sub(el, "commodity", espi.COMMODITY_ELECTRICITY)
        if rt.currency is not None:
            _sub(el, "currency", rt.currency)
        _sub(el, "dataQualifier", espi.QUALIFIER_NORMAL)
        _sub(el, "flowDirection", rt.flow)
        _sub(el, "intervalLength", rt.interval_s)
        _sub(el, "kind", espi.KIND_ENERGY)
        _sub(el, "powerOfTenMultiplier", espi.MULTIPLIER_MILLI)
        _sub(el, "timeAttribute", 0)
        _sub(el, "uom", espi.UOM_WH)
        for j, block in enumerate(mr.blocks, 1):
            self.block_entry(f"{base}/IntervalBlock", j, block)

    def block_entry(self, up: str, j: int, block: espi.IntervalBlock) -> None:
        el = self.entry(f"{up}/{j}", up, [], block.label, "IntervalBlock")
        _period(el, "interval", block.start, block.duration)
        for r in block.readings:
            ir = _sub(el, "IntervalReading")
            if r.cost is not None:
                _sub(ir, "cost", r.cost)
            for q in r.qualities:
                _sub(_sub(ir, "ReadingQuality"), "quality", q)
            _period(ir, "timePeriod", r.start, r.duration)
            _sub(ir, "value", r.value)


def _period(parent: ET.Element, tag: str, start: int, duration: int) -> None:
    el = _sub(parent, tag)
    _sub(el, "duration", duration)
    _sub(el, "start", start)


def write_feed(feed: Feed, out: BinaryIO) -> None:
    """The feed as UTF-8 XML, indented."""
    w = _Writer(feed)
    w.head()
    w.usage_point_entry()
    w.local_time_entry()
    for k, mr in enumerate(feed.meter_readings, 1):
        w.meter_reading_entries(k, mr)
    tree = ET.ElementTree(w.root)
    ET.indent(tree, space=" ")
    tree.write(out, encoding="utf-8", xml_declaration=True)
    out.write(b"\n")
