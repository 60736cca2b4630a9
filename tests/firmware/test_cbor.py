# meter/cbor.py on MicroPython: deterministic encoding (RFC 8949 section 4.2.1) and the strict decoder.
from mptest import eq, raises

from meter import cbor
from meter.cbor import Tag

H = bytes.fromhex


def roundtrip(value, hexstr):
    eq(cbor.encode(value).hex(), hexstr, "encode %r" % (value,))
    eq(cbor.decode(H(hexstr)), value, "decode %s" % hexstr)


# RFC 8949 Appendix A, the examples inside the deterministic subset (no floats, no indefinite lengths).
APPENDIX_A = [
    (0, "00"), (1, "01"), (10, "0a"), (23, "17"), (24, "1818"), (25, "1819"), (100, "1864"),
    (1000, "1903e8"), (1000000, "1a000f4240"), (1000000000000, "1b000000e8d4a51000"),
    (18446744073709551615, "1bffffffffffffffff"), (-18446744073709551616, "3bffffffffffffffff"),
    (-1, "20"), (-10, "29"), (-100, "3863"), (-1000, "3903e7"),
    (False, "f4"), (True, "f5"), (None, "f6"),
    (b"", "40"), (H("01020304"), "4401020304"),
    ("", "60"), ("a", "6161"), ("IETF", "6449455446"), ("\"\\", "62225c"), ("\u00fc", "62c3bc"),
    ("\u6c34", "63e6b0b4"), ("\U00010151", "64f0908591"),
    ([], "80"), ([1, 2, 3], "83010203"), ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"), ({1: 2, 3: 4}, "a201020304"), ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    (["a", {"b": "c"}], "826161a161626163"),
    ({"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"}, "a56161614161626142616361436164614461656145"),
    (Tag(0, "2013-03-21T20:04:00Z"), "c074323031332d30332d32315432303a30343a30305a"),
    (Tag(1, 1363896240), "c11a514b67b0"),
    (Tag(23, H("01020304")), "d74401020304"),
    (Tag(24, H("6449455446")), "d818456449455446"),
    (Tag(32, "http://www.example.com"), "d82076687474703a2f2f7777772e6578616d706c652e636f6d"),
    # bignums (tags 2 and 3) are outside the integer range we encode: they stay uninterpreted tags
    (Tag(2, H("010000000000000000")), "c249010000000000000000"),
    (Tag(3, H("010000000000000000")), "c349010000000000000000"),
]


def _appendix_a():
    for value, hexstr in APPENDIX_A:
        roundtrip(value, hexstr)


def _appendix_a_rejected():
    for hexstr in ("f90000", "f93c00", "f97bff", "fa47c35000", "fb3ff199999999999a", "f97c00",
                   "fb7ff8000000000000"):
        raises(cbor.FloatRejected, cbor.decode, H(hexstr))
    for hexstr in ("f0", "f7", "f818", "f8ff"):  # simple(16), undefined, simple(24), simple(255)
        raises(cbor.BadSimple, cbor.decode, H(hexstr))
    for hexstr in ("5f42010243030405ff", "7f657374726561646d696e67ff", "9fff", "9f018202039f0405ffff",
                   "83018202039f0405ff", "bf61610161629f0203ffff", "826161bf61626163ff",
                   "bf6346756ef563416d7421ff"):
        raises(cbor.IndefiniteLength, cbor.decode, H(hexstr))


def test_ints():
    cases = [(0, "00"), (23, "17"), (24, "1818"), (255, "18ff"), (256, "190100"), (65535, "19ffff"),
             (65536, "1a00010000"), (2**32 - 1, "1affffffff"), (2**32, "1b0000000100000000"),
             (-24, "37"), (-25, "3818"), (-256, "38ff"), (-257, "390100"), (-2**32, "3affffffff"),
             (-2**32 - 1, "3b0000000100000000")]
    for value, hexstr in cases:
        roundtrip(value, hexstr)


def _string_heads():
    for n, head in ((23, "57"), (24, "5818"), (255, "58ff"), (256, "590100"), (70000, "5a00011170")):
        enc = cbor.encode(b"x" * n)
        eq(enc[:len(head) // 2].hex(), head, "bstr head for %d" % n)
        eq(len(enc), len(head) // 2 + n, "length")
        eq(cbor.decode(enc, max_len=100000), b"x" * n, "decode %d" % n)
    eq(cbor.encode("x" * 24)[:2].hex(), "7818", "tstr head")
    eq(cbor.encode(list(range(24)))[:2].hex(), "9818", "array head")


def _nested():
    value = {0: H("0102030405060708"), 1: 3, 2: 781234, 3: 1700000000, 4: 0,
             5: {1: [123456789, 0, 5], 2: {1: -5, 2: "ok"}}, 6: [[], {}, [None, True, False]],
             7: Tag(18, [b"a", {4: b"k"}, b"", b"s"])}
    enc = cbor.encode(value)
    eq(cbor.decode(enc), value, "nested")
    eq(cbor.encode(cbor.decode(enc)), enc, "decode then encode is the identity on bytes")


def _bytes_like():
    eq(cbor.encode((1, 2)), cbor.encode([1, 2]), "tuple")
    eq(cbor.encode(bytearray(b"ab")), b"\x42ab", "bytearray")
    eq(cbor.encode(memoryview(b"ab")), b"\x42ab", "memoryview")


def test_key_sort():
    # bytewise order of encodings: 0x01 < 0x0a < 0x17 < 0x1818 < 0x1903e8 < 0x20 < 0x29 < 0x3863 < 0x40..
    # (not RFC 7049 length-first order, which would put -1 (0x20) before 24 (0x1818))
    enc = cbor.encode({-1: 0, 24: 0, 1: 0, 1000: 0, -100: 0, 23: 0, 10: 0, -10: 0})
    want = "a8" + "0100" + "0a00" + "1700" + "181800" + "1903e800" + "2000" + "2900" + "386300"
    eq(enc.hex(), want, "order")
    eq(cbor.encode({"b": 1, "aa": 2, "a": 3}).hex(), "a3616103616201626161" + "02", "text keys")
    eq(cbor.encode({b"\x02": 1, 100: 2, "a": 3}).hex(), "a3" + "186402" + "410201" + "616103", "mixed types")


def _encode_into():
    buf = bytearray(b"\xAA")
    cbor.encode_into(buf, [1, {2: b"x"}])
    eq(bytes(buf), b"\xaa\x82\x01\xa1\x02\x41x", "appended")


def _encode_rejects():
    raises(cbor.EncodeError, cbor.encode, 1.5)
    raises(cbor.EncodeError, cbor.encode, [1, 0.0])
    raises(cbor.EncodeError, cbor.encode, {1: 2.5})
    raises(cbor.EncodeError, cbor.encode, 2**64)
    raises(cbor.EncodeError, cbor.encode, -2**64 - 1)
    raises(cbor.EncodeError, cbor.encode, {1, 2})
    raises(cbor.EncodeError, cbor.encode, object())
    raises(cbor.EncodeError, cbor.encode, {(1, 2): 3})
    raises(cbor.EncodeError, cbor.encode, {True: 1})
    raises(cbor.EncodeError, cbor.encode, {None: 1})
    raises(cbor.EncodeError, cbor.encode, Tag(-1, 0))
    e = raises(cbor.EncodeError, cbor.encode, 1.0)
    assert "float" in str(e), str(e)
    assert isinstance(e, cbor.CBORError) and isinstance(e, ValueError), "EncodeError is a CBORError"


def _encode_depth():
    v = 0
    for _ in range(cbor.MAX_DEPTH):
        v = [v]
    eq(cbor.decode(cbor.encode(v)), v, "MAX_DEPTH nested arrays round trip")
    raises(cbor.EncodeError, cbor.encode, [v])
    cyclic = []
    cyclic.append(cyclic)
    raises(cbor.EncodeError, cbor.encode, cyclic)


def _decode_types():
    eq(cbor.decode(bytearray(b"\x82\x01\x02")), [1, 2], "bytearray")
    eq(cbor.decode(memoryview(b"\x82\x01\x02")), [1, 2], "memoryview")
    raises(TypeError, cbor.decode, "8201")


def _truncated():
    for hexstr in ("", "18", "1901", "1a000000", "1b00000000000000", "43", "4301", "6261", "82", "8201",
                   "a1", "a101", "a20102", "c1", "d8", "d818", "9819", "5a00010000"):
        e = raises(cbor.Truncated, cbor.decode, H(hexstr))
        assert isinstance(e, cbor.DecodeError), "Truncated is a DecodeError"


def _huge_lengths():
    for hexstr in ("5bffffffffffffffff", "7bffffffffffffffff", "9bffffffffffffffff", "bbffffffffffffffff",
                   "5b7fffffffffffffff01", "9a7fffffff00"):
        raises(cbor.Truncated, cbor.decode, H(hexstr))


def _trailing():
    for hexstr in ("0000", "8001", "a0a0", "f6f6", "4100ff"):
        raises(cbor.TrailingBytes, cbor.decode, H(hexstr))


def _not_shortest():
    for hexstr in ("1800", "1817", "190000", "1900ff", "1a00000000", "1a0000ffff", "1b0000000000000000",
                   "1b00000000ffffffff", "3817", "3900ff", "5801ff", "590001ff", "780161", "9801" "01",
                   "b80101" "02", "d80001", "d9001201"):
        raises(cbor.NotShortest, cbor.decode, H(hexstr))


def _reserved():
    for major in range(8):
        for ai in (28, 29, 30):
            raises(cbor.ReservedInfo, cbor.decode, bytes([(major << 5) | ai]) + b"\x00" * 8)
    for hexstr in ("1f", "3f", "df"):  # 31 on unsigned, negative, tag: not well-formed
        raises(cbor.ReservedInfo, cbor.decode, H(hexstr))


def _indefinite():
    for hexstr in ("5fff", "7fff", "9fff", "bfff", "ff", "5f4100ff", "8201ff"):
        e = raises(cbor.IndefiniteLength, cbor.decode, H(hexstr))
        assert isinstance(e, cbor.DecodeError), "IndefiniteLength is a DecodeError"


def test_simple():
    for hexstr in ("f93c00", "fa3f800000", "fb3ff0000000000000", "8201f93c00", "a101fa00000000"):
        raises(cbor.FloatRejected, cbor.decode, H(hexstr))
    for hexstr in ("e0", "f3", "f7", "f820", "f8ff", "8201f7"):
        raises(cbor.BadSimple, cbor.decode, H(hexstr))
    eq(cbor.decode(H("83f4f5f6")), [False, True, None], "false/true/null")


def _key_order():
    raises(cbor.UnsortedKeys, cbor.decode, H("a202000100"))
    raises(cbor.UnsortedKeys, cbor.decode, H("a2616201616100"))  # "b", "a"
    raises(cbor.UnsortedKeys, cbor.decode, H("a2626161006162" "01"))  # "aa" before "b": length-first
    raises(cbor.UnsortedKeys, cbor.decode, H("a220001818" "00"))  # -1 before 24: RFC 7049 order
    eq(cbor.decode(H("a218180020" "00")), {24: 0, -1: 0}, "bytewise order accepted")
    raises(cbor.DuplicateKey, cbor.decode, H("a201000100"))
    raises(cbor.DuplicateKey, cbor.decode, H("a2616101616102"))
    # a duplicate that is not adjacent shows up as a key sorting before its predecessor
    raises(cbor.UnsortedKeys, cbor.decode, H("a3010002000100"))
    e = raises(cbor.UnsortedKeys, cbor.decode, H("a1" "01" "a2" "0200" "0100"))  # nested map
    assert "offset" in str(e), str(e)


def _bad_keys():
    for hexstr in ("a1800000", "a1a00000", "a1c00000", "a1f500", "a1f600", "a1f400", "a1f93c0000"):
        raises(cbor.BadKey, cbor.decode, H(hexstr))
    eq(cbor.decode(H("a3" "0100" "2000" "416100")), {1: 0, -1: 0, b"a": 0}, "int and bytes keys")


def test_utf8():
    for hexstr in ("61ff", "62c328", "62c080", "63eda080", "64f4908080", "61c3", "6180", "63e08080",
                   "64f0808080", "62c1bf", "62efbf"):
        raises(cbor.InvalidUTF8, cbor.decode, H(hexstr))
    eq(cbor.decode(H("64f48fbfbf")), "\U0010ffff", "U+10FFFF is fine")
    eq(cbor.decode(H("63efbfbf")), "\uffff", "U+FFFF is fine")


def _depth():
    sixteen = [[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]
    eq(cbor.decode(b"\x81" * 16 + b"\x00"), sixteen, "16 deep")
    raises(cbor.TooDeep, cbor.decode, b"\x81" * 17 + b"\x00")
    raises(cbor.TooDeep, cbor.decode, b"\x81" * 3 + b"\x80", max_depth=3)
    eq(cbor.decode(b"\x81\x81\x80", max_depth=3), [[[]]], "exactly max_depth")
    raises(cbor.TooDeep, cbor.decode, b"\xc1" * 5 + b"\x00", max_depth=4)
    raises(cbor.TooDeep, cbor.decode, b"\xa1\x01" * 5 + b"\x00", max_depth=4)
    # deeper than a recursive decoder would survive: the decoder keeps its own stack
    deep = b"\x81" * 3000 + b"\x00"
    v = cbor.decode(deep, max_depth=3000, max_items=4000)
    for _ in range(3000):
        v = v[0]
    eq(v, 0, "3000 nested arrays")
    raises(cbor.TooDeep, cbor.decode, deep, max_depth=2999, max_items=4000)


def _items():
    arr = cbor.encode(list(range(100)))
    eq(len(cbor.decode(arr, max_items=101)), 100, "101 items = array + 100")
    raises(cbor.TooManyItems, cbor.decode, arr, max_items=100)
    raises(cbor.TooManyItems, cbor.decode, H("9a00010000") + b"\x00" * 65536, max_len=70000)
    raises(cbor.TooManyItems, cbor.decode, cbor.encode([[1, 2], [3, 4], [5, 6]]), max_items=8)


def _length():
    raises(cbor.TooLong, cbor.decode, b"\x40" + b"\x00" * 10, max_len=10)
    raises(cbor.TooLong, cbor.decode, bytes(cbor.MAX_LEN + 1))
    eq(cbor.decode(b"\x49" + b"\x00" * 9, max_len=10), b"\x00" * 9, "exactly max_len")


def _hierarchy():
    for cls in (cbor.TooLong, cbor.Truncated, cbor.TrailingBytes, cbor.IndefiniteLength, cbor.NotShortest,
                cbor.ReservedInfo, cbor.FloatRejected, cbor.BadSimple, cbor.UnsortedKeys, cbor.DuplicateKey,
                cbor.BadKey, cbor.InvalidUTF8, cbor.TooDeep, cbor.TooManyItems):
        assert issubclass(cls, cbor.DecodeError), cls.__name__
        assert issubclass(cls, cbor.CBORError), cls.__name__
        assert issubclass(cls, ValueError), cls.__name__


def _prefixes():
    enc = cbor.encode({1: [1, 2, {3: b"abc"}], 2: "text", 3: Tag(18, [b"x", -500000])})
    for cut in range(len(enc)):
        raises(cbor.Truncated, cbor.decode, enc[:cut])


def _single_bytes():
    accepted = 0
    for b in range(256):
        for tail in (b"", b"\x00", b"\x01\x02", b"\x18\x18\x18"):
            try:
                cbor.decode(bytes([b]) + tail)
                accepted += 1
            except cbor.DecodeError:
                pass
    assert accepted > 24, "some inputs decode"


# Grouped checks (each helper above covers one rule).


def test_rfc_examples():
    _appendix_a()
    _appendix_a_rejected()


def test_strings():
    _string_heads()
    _bytes_like()


def test_nested():
    _nested()
    _encode_into()


def test_enc_errors():
    _encode_rejects()
    _encode_depth()


def test_truncated():
    _truncated()
    _huge_lengths()
    _prefixes()


def test_heads():
    _not_shortest()
    _reserved()
    _indefinite()
    _trailing()


def test_map_keys():
    _key_order()
    _bad_keys()


def test_limits():
    _depth()
    _items()
    _length()
    _decode_types()


def test_errors():
    _hierarchy()
    _single_bytes()
