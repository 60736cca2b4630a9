# What the firmware-update path costs a meter (docs/firmware-updates.md, "Measured"): heap and time of taking a
# manifest, a 1 KB chunk, and activation (the payload's SHA-256 read back from the partition), on the Unix
# port's partition files. Run by the 32-bit interpreter for a board's figures:
#   build/mp32/micropython firmware/sim/bench_fwupdate.py [payload KB]   (cwd: the checkout; PYTHONPATH-free)
import gc
import hashlib
import struct
import sys
import time

sys.path.insert(0, "firmware")
from meter import cbor, cose, p256  # noqa: E402
from meter.fwupdate import Updater, class_id, install_key  # noqa: E402
from meter.messages import (FW_CHUNK_MAX, FW_IMAGE, FW_VENDOR, FWM_CLASS, FWM_DIGEST, FWM_FORMAT,  # noqa: E402
                            FWM_PAYLOAD, FWM_SEQ, FWM_SIZE, FWM_VENDOR, FWM_VERSION)
from sim import ota  # noqa: E402


def main(kb):
    d = "/tmp/meterkit-bench-fw-%d" % (time.ticks_us() & 0xFFFFFF)
    import os
    os.mkdir(d)
    key = bytes(range(7, 39))
    pub = p256.public_key(key)
    install_key(d, pub)
    img = b"MKIM" + struct.pack("<H", 0) + b"\x5a" * (kb * 1024 - 6)
    m = {FWM_FORMAT: 1, FWM_SEQ: 2, FWM_VENDOR: FW_VENDOR, FWM_CLASS: class_id("unix-sim"),
         FWM_DIGEST: hashlib.sha256(img).digest(), FWM_SIZE: len(img), FWM_PAYLOAD: FW_IMAGE, FWM_VERSION: "v2"}
    man = cose.sign1(key, hashlib.sha256(pub).digest()[:8], cbor.encode(m))
    chunks = [img[o:o + FW_CHUNK_MAX] for o in range(0, len(img), FW_CHUNK_MAX)]
    del img
    gc.collect()
    base = gc.mem_alloc()
    u = Updater(ota.SimOta(d, "ota_0"), d, class_id("unix-sim"), lambda c, v: None)
    out = {}
    t = time.ticks_us()
    r = u.manifest(man)
    out["manifest_us"] = time.ticks_diff(time.ticks_us(), t)
    out["manifest_garbage_bytes"] = gc.mem_alloc() - base  # the signature check's big integers, collectable
    gc.collect()
    out["updater_live_bytes"] = gc.mem_alloc() - base  # the module's objects and state kept between commands
    peak = 0
    t = time.ticks_us()
    for i, c in enumerate(chunks):
        gc.collect()
        a = gc.mem_alloc()
        r = u.chunk(i * FW_CHUNK_MAX, c)
        peak = max(peak, gc.mem_alloc() - a)
    out["chunk_us"] = time.ticks_diff(time.ticks_us(), t) // len(chunks)
    out["chunk_alloc_bytes"] = peak
    gc.collect()
    a = gc.mem_alloc()
    t = time.ticks_us()
    r = u.activate()
    out["activate_us"] = time.ticks_diff(time.ticks_us(), t)
    out["activate_alloc_bytes"] = gc.mem_alloc() - a  # the digest's read buffer and the second signature check
    out["result"] = r[0]
    out["payload_kb"] = kb
    print(out)


main(int(sys.argv[1]) if len(sys.argv) > 1 else 64 - 4)
