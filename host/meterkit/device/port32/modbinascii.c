// `binascii`: a test-only STAND-IN for extmod's binascii (not in the sdist): hexlify, unhexlify and crc32,
// with the same results and result types (crc32 returns an unsigned 32-bit value, a big int above 2^30).

#include "py/objstr.h"
#include "py/runtime.h"
#include "mp32port.h"

static mp_obj_t binascii_hexlify(size_t n_args, const mp_obj_t *args) {
    mp_buffer_info_t b;
    mp_get_buffer_raise(args[0], &b, MP_BUFFER_READ);
    const char *sep = NULL;
    if (n_args > 1) {
        sep = mp_obj_str_get_str(args[1]);
    }
    vstr_t v;
    vstr_init(&v, b.len * 3);
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < b.len; i++) {
        if (i && sep) {
            vstr_add_str(&v, sep);
        }
        uint8_t c = ((const uint8_t *)b.buf)[i];
        vstr_add_byte(&v, hex[c >> 4]);
        vstr_add_byte(&v, hex[c & 15]);
    }
    return mp_obj_new_bytes_from_vstr(&v);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(binascii_hexlify_obj, 1, 2, binascii_hexlify);

static int nibble(uint8_t c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c |= 0x20;
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    mp_raise_ValueError(MP_ERROR_TEXT("non-hex digit"));
}

static mp_obj_t binascii_unhexlify(mp_obj_t data) {
    mp_buffer_info_t b;
    mp_get_buffer_raise(data, &b, MP_BUFFER_READ);
    if (b.len % 2) {
        mp_raise_ValueError(MP_ERROR_TEXT("odd-length string"));
    }
    vstr_t v;
    vstr_init_len(&v, b.len / 2);
    const uint8_t *p = b.buf;
    for (size_t i = 0; i < b.len / 2; i++) {
        v.buf[i] = (char)(nibble(p[2 * i]) << 4 | nibble(p[2 * i + 1]));
    }
    return mp_obj_new_bytes_from_vstr(&v);
}
static MP_DEFINE_CONST_FUN_OBJ_1(binascii_unhexlify_obj, binascii_unhexlify);

// CRC-32 of IEEE 802.3 / zlib, bit by bit (reflected polynomial 0xEDB88320); crc32(data[, start]).
static mp_obj_t binascii_crc32(size_t n_args, const mp_obj_t *args) {
    mp_buffer_info_t b;
    mp_get_buffer_raise(args[0], &b, MP_BUFFER_READ);
    uint32_t crc = n_args > 1 ? (uint32_t)mp_obj_get_int_truncated(args[1]) : 0;
    crc = ~crc;
    const uint8_t *p = b.buf;
    for (size_t i = 0; i < b.len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
        }
    }
    return mp_obj_new_int_from_uint(~crc);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(binascii_crc32_obj, 1, 2, binascii_crc32);

static const mp_rom_map_elem_t binascii_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_binascii) },
    { MP_ROM_QSTR(MP_QSTR_hexlify), MP_ROM_PTR(&binascii_hexlify_obj) },
    { MP_ROM_QSTR(MP_QSTR_unhexlify), MP_ROM_PTR(&binascii_unhexlify_obj) },
    { MP_ROM_QSTR(MP_QSTR_crc32), MP_ROM_PTR(&binascii_crc32_obj) },
};
MP32_MODULE(binascii)
