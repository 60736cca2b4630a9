# Deterministic CBOR (RFC 8949 section 4.2.1, "core deterministic encoding") and a strict decoder.
# Pure: runs under MicroPython and CPython.
#
# Data model (both directions): int in [-2^64, 2^64 - 1], bytes, str, list (tuple encodes as an array), dict
# with int / str / bytes keys, True, False, None and Tag(number, value). No floats, no other simple values,
# no bignums (tags 2/3 would decode as plain Tag objects, uninterpreted).
#
#   encode(obj) -> bytes          encode_into(buf, obj)   (appends to a bytearray)
#   decode(data, max_len=, max_depth=, max_items=) -> obj
#
# Encoding: shortest-form heads, definite lengths, map entries sorted by the bytewise lexicographic order of
# the encoded keys. Everything is appended to one growing bytearray (amortised O(n)); only each map's keys
# are encoded separately, to sort them.
#
# Decoding is strict: only the deterministic encoding of a value is accepted, so every accepted input is the
# unique encoding of what it decodes to (decode then encode gives back the same bytes). Each violation raises
# its own subclass of DecodeError (itself a CBORError, a ValueError). The decoder is iterative (an explicit
# stack, no recursion), checks every length against the bytes that remain before slicing or allocating, and
# stops at max_depth nested containers and max_items data items, so no input can exhaust the stack or heap.

MAX_LEN = 16384
MAX_DEPTH = 16
MAX_ITEMS = 2048

_UINT64_LIMIT = 1 << 64


class CBORError(ValueError):
    pass


class EncodeError(CBORError):
    pass


class DecodeError(CBORError):
    pass


class TooLong(DecodeError):
    """The input is longer than max_len."""


class Truncated(DecodeError):
    """The input ends inside a data item (a head, a string, or a container's items)."""


class TrailingBytes(DecodeError):
    """Bytes follow the single top-level data item."""


class IndefiniteLength(DecodeError):
    """Indefinite-length string, array or map (additional info 31), or a stray break byte 0xff."""


class NotShortest(DecodeError):
    """An integer, length or tag number not in its shortest form."""


class ReservedInfo(DecodeError):
    """Additional information 28, 29 or 30 (reserved), or 31 on major type 0, 1 or 6."""


class FloatRejected(DecodeError):
    """Half, single or double precision float (major type 7, additional info 25/26/27)."""


class BadSimple(DecodeError):
    """A simple value other than false, true and null (undefined included)."""


class UnsortedKeys(DecodeError):
    """Map keys not in ascending bytewise order of their encodings."""


class DuplicateKey(DecodeError):
    """The same map key twice."""


class BadKey(DecodeError):
    """A map key that is not an int, a text string or a byte string."""


class InvalidUTF8(DecodeError):
    """A text string that is not well-formed UTF-8."""


class TooDeep(DecodeError):
    """Containers (arrays, maps, tags) nested deeper than max_depth."""


class TooManyItems(DecodeError):
    """More than max_items data items in total."""


class Tag:
    """A CBOR tag: number (>= 0) applied to value. COSE_Sign1 is Tag(18, [...])."""

    def __init__(self, number, value):
        self.number = number
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.number == other.number and self.value == other.value

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "Tag(%d, %r)" % (self.number, self.value)


# ---------------------------------------------------------------------------------------------------------
# encoder


def _head(out, major, n):
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(mt | 25)
        out.extend(n.to_bytes(2, "big"))
    elif n < 0x100000000:
        out.append(mt | 26)
        out.extend(n.to_bytes(4, "big"))
    else:
        out.append(mt | 27)
        out.extend(n.to_bytes(8, "big"))


def _enc(out, obj, depth):
    if obj is None:
        out.append(0xF6)
    elif obj is True:
        out.append(0xF5)
    elif obj is False:
        out.append(0xF4)
    elif isinstance(obj, int):
        if obj >= 0:
            if obj >= _UINT64_LIMIT:
                raise EncodeError("integer above 2^64 - 1")
            _head(out, 0, obj)
        else:
            n = -1 - obj
            if n >= _UINT64_LIMIT:
                raise EncodeError("integer below -2^64")
            _head(out, 1, n)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        _head(out, 2, len(obj))
        out.extend(obj)
    elif isinstance(obj, str):
        b = obj.encode("utf-8")
        _head(out, 3, len(b))
        out.extend(b)
    elif isinstance(obj, (list, tuple)):
        _deeper(depth)
        _head(out, 4, len(obj))
        for item in obj:
            _enc(out, item, depth + 1)
    elif isinstance(obj, dict):
        _deeper(depth)
        entries = []
        for k, v in obj.items():
            if k is True or k is False or not isinstance(k, (int, str, bytes)):
                raise EncodeError("map key must be int, str or bytes, not %s" % type(k).__name__)
            kb = bytearray()
            _enc(kb, k, depth + 1)
            entries.append((bytes(kb), v))
        entries.sort(key=_first)
        for i in range(1, len(entries)):
            if entries[i][0] == entries[i - 1][0]:
                raise EncodeError("duplicate map key")
        _head(out, 5, len(entries))
        for kb, v in entries:
            out.extend(kb)
            _enc(out, v, depth + 1)
    elif isinstance(obj, Tag):
        _deeper(depth)
        if not isinstance(obj.number, int) or not 0 <= obj.number < _UINT64_LIMIT:
            raise EncodeError("bad tag number")
        _head(out, 6, obj.number)
        _enc(out, obj.value, depth + 1)
    elif isinstance(obj, float):
        raise EncodeError("floats are not allowed (use integers in fixed units)")
    else:
        raise EncodeError("cannot encode %s" % type(obj).__name__)


def _deeper(depth):
    # containers nest at most MAX_DEPTH deep (the decoder's default limit): cycles end here too
    if depth >= MAX_DEPTH:
        raise EncodeError("containers nested deeper than %d" % MAX_DEPTH)


def _first(entry):
    return entry[0]


def encode_into(buf, obj):
    """Append the deterministic encoding of obj to bytearray buf."""
    _enc(buf, obj, 0)


def encode(obj):
    """Deterministic CBOR encoding of obj (bytes)."""
    out = bytearray()
    _enc(out, obj, 0)
    return bytes(out)


# ---------------------------------------------------------------------------------------------------------
# decoder

_ARRAY = 0
_MAP = 1
_TAG = 2


def _check_utf8(b):
    """Raise InvalidUTF8 unless b is well-formed UTF-8 (RFC 3629: no overlongs, surrogates, > U+10FFFF)."""
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            need, lo, hi = 1, 0x80, 0xBF
        elif c == 0xE0:
            need, lo, hi = 2, 0xA0, 0xBF
        elif c == 0xED:
            need, lo, hi = 2, 0x80, 0x9F
        elif 0xE1 <= c <= 0xEF:
            need, lo, hi = 2, 0x80, 0xBF
        elif c == 0xF0:
            need, lo, hi = 3, 0x90, 0xBF
        elif c == 0xF4:
            need, lo, hi = 3, 0x80, 0x8F
        elif 0xF1 <= c <= 0xF3:
            need, lo, hi = 3, 0x80, 0xBF
        else:
            raise InvalidUTF8("bad UTF-8 lead byte 0x%02x" % c)
        if i + need >= n:
            raise InvalidUTF8("truncated UTF-8 sequence")
        c1 = b[i + 1]
        if not lo <= c1 <= hi:
            raise InvalidUTF8("bad UTF-8 continuation")
        for j in range(i + 2, i + need + 1):
            if not 0x80 <= b[j] <= 0xBF:
                raise InvalidUTF8("bad UTF-8 continuation")
        i += need + 1


def decode(data, max_len=MAX_LEN, max_depth=MAX_DEPTH, max_items=MAX_ITEMS):
    """Decode exactly one deterministically encoded data item from data (bytes-like)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("decode() needs bytes")
    n = len(data)
    if n > max_len:
        raise TooLong("input is %d bytes, limit %d" % (n, max_len))
    if not isinstance(data, bytes):
        data = bytes(data)
    pos = 0
    items = 0
    # frames: [kind, container, remaining, key, prev_key_start, prev_key_end, want_key]
    stack = []
    while True:
        if pos >= n:
            raise Truncated("input ends where a data item should start (offset %d)" % pos)
        start = pos
        ib = data[pos]
        pos += 1
        major = ib >> 5
        ai = ib & 31
        items += 1
        if items > max_items:
            raise TooManyItems("more than %d data items" % max_items)
        top = stack[-1] if stack else None
        want_key = top is not None and top[0] == _MAP and top[6]
        if want_key and major > 3:
            raise BadKey("map key of major type %d at offset %d" % (major, start))
        # --- head ---
        if major == 7:
            if ai == 20:
                value = False
            elif ai == 21:
                value = True
            elif ai == 22:
                value = None
            elif 25 <= ai <= 27:
                raise FloatRejected("float at offset %d" % start)
            elif 28 <= ai <= 30:
                raise ReservedInfo("reserved additional info %d at offset %d" % (ai, start))
            elif ai == 31:
                raise IndefiniteLength("break byte outside an indefinite-length item at offset %d" % start)
            else:
                raise BadSimple("simple value (info %d) at offset %d" % (ai, start))
        else:
            if ai < 24:
                arg = ai
            elif ai <= 27:
                size = 1 << (ai - 24)
                if pos + size > n:
                    raise Truncated("head at offset %d needs %d more bytes" % (start, size))
                if size == 1:
                    arg = data[pos]
                else:
                    arg = int.from_bytes(data[pos:pos + size], "big")
                pos += size
                if arg < (24 if size == 1 else 1 << (4 * size)):
                    raise NotShortest("argument %d in %d bytes at offset %d" % (arg, size, start))
            elif ai == 31:
                if major in (2, 3, 4, 5):
                    raise IndefiniteLength("indefinite-length item at offset %d" % start)
                raise ReservedInfo("additional info 31 on major type %d at offset %d" % (major, start))
            else:
                raise ReservedInfo("reserved additional info %d at offset %d" % (ai, start))
            if major == 0:
                value = arg
            elif major == 1:
                value = -1 - arg
            elif major == 2 or major == 3:
                if arg > n - pos:
                    raise Truncated("string of %d bytes at offset %d, %d bytes left" % (arg, start, n - pos))
                raw = data[pos:pos + arg]
                pos += arg
                if major == 2:
                    value = raw
                else:
                    _check_utf8(raw)
                    value = raw.decode("utf-8")
            else:
                # containers: refuse before allocating anything that a length field asks for
                if major == 4 or major == 5:
                    need = arg if major == 4 else 2 * arg
                    if need > n - pos:
                        raise Truncated("container of %d items at offset %d, %d bytes left"
                                        % (need, start, n - pos))
                    if items + need > max_items:
                        raise TooManyItems("more than %d data items" % max_items)
                if len(stack) >= max_depth:
                    raise TooDeep("nested deeper than %d at offset %d" % (max_depth, start))
                if major == 4:
                    if arg:
                        stack.append([_ARRAY, [], arg, None, 0, 0, False])
                        continue
                    value = []
                elif major == 5:
                    if arg:
                        stack.append([_MAP, {}, arg, None, -1, -1, True])
                        continue
                    value = {}
                else:
                    stack.append([_TAG, arg, 1, None, 0, 0, False])
                    continue
        # --- a complete value: hand it to the enclosing containers ---
        while True:
            if not stack:
                if pos != n:
                    raise TrailingBytes("%d bytes after the data item" % (n - pos))
                return value
            top = stack[-1]
            kind = top[0]
            if kind == _ARRAY:
                top[1].append(value)
                top[2] -= 1
                if top[2]:
                    break
            elif kind == _MAP:
                if top[6]:
                    # value is a key (int, bytes or str: its encoding is data[start:pos]). Distinct
                    # encodings of these types are distinct Python values, so strictly ascending encodings
                    # also rule out two keys colliding in the dict.
                    ps, pe = top[4], top[5]
                    if ps >= 0:
                        prev = data[ps:pe]
                        cur = data[start:pos]
                        if cur == prev:
                            raise DuplicateKey("duplicate map key at offset %d" % start)
                        if cur < prev:
                            raise UnsortedKeys("map key at offset %d sorts before its predecessor" % start)
                    top[3] = value
                    top[4] = start
                    top[5] = pos
                    top[6] = False
                    break
                top[1][top[3]] = value
                top[6] = True
                top[2] -= 1
                if top[2]:
                    break
            else:
                value = Tag(top[1], value)
            stack.pop()
            value = top[1] if kind != _TAG else value
