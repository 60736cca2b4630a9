// `hashlib`: a test-only STAND-IN for extmod's hashlib (not in the sdist) with the one hash the meter uses,
// SHA-256 (FIPS 180-4), written for this port: sha256([data]) -> .update(data), .digest().

#include <string.h>

#include "py/runtime.h"
#include "mp32port.h"

typedef struct _sha256_t {
    uint32_t h[8];
    uint64_t bytes;     // message length so far
    uint8_t block[64];  // the partial block
} sha256_t;

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void compress(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++) {
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    }
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += k;
}

static void sha256_init(sha256_t *s) {
    static const uint32_t iv[8] = {
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    };
    memcpy(s->h, iv, sizeof(iv));
    s->bytes = 0;
}

static void sha256_update(sha256_t *s, const uint8_t *p, size_t n) {
    while (n > 0) {
        size_t used = s->bytes % 64;
        size_t take = 64 - used < n ? 64 - used : n;
        memcpy(s->block + used, p, take);
        s->bytes += take;
        p += take;
        n -= take;
        if (s->bytes % 64 == 0) {
            compress(s->h, s->block);
        }
    }
}

// Finishes a copy, so digest() may be called again and update() may follow it.
static void sha256_digest(const sha256_t *s_in, uint8_t out[32]) {
    sha256_t s = *s_in;
    uint64_t bits = s.bytes * 8;
    static const uint8_t pad[64] = {0x80};
    sha256_update(&s, pad, 1 + (119 - s.bytes % 64) % 64);
    uint8_t len[8];
    for (int i = 0; i < 8; i++) {
        len[i] = (uint8_t)(bits >> (56 - 8 * i));
    }
    sha256_update(&s, len, 8);
    for (int i = 0; i < 32; i++) {
        out[i] = (uint8_t)(s.h[i / 4] >> (24 - 8 * (i % 4)));
    }
}

typedef struct _hash_obj_t {
    mp_obj_base_t base;
    sha256_t state;
} hash_obj_t;

static mp_obj_t hash_update(mp_obj_t self_in, mp_obj_t data) {
    hash_obj_t *self = MP_OBJ_TO_PTR(self_in);
    mp_buffer_info_t b;
    mp_get_buffer_raise(data, &b, MP_BUFFER_READ);
    sha256_update(&self->state, b.buf, b.len);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(hash_update_obj, hash_update);

static mp_obj_t hash_digest(mp_obj_t self_in) {
    hash_obj_t *self = MP_OBJ_TO_PTR(self_in);
    uint8_t out[32];
    sha256_digest(&self->state, out);
    return mp_obj_new_bytes(out, 32);
}
static MP_DEFINE_CONST_FUN_OBJ_1(hash_digest_obj, hash_digest);

static const mp_rom_map_elem_t hash_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_update), MP_ROM_PTR(&hash_update_obj) },
    { MP_ROM_QSTR(MP_QSTR_digest), MP_ROM_PTR(&hash_digest_obj) },
};
static MP_DEFINE_CONST_DICT(hash_locals, hash_locals_table);

static mp_obj_t hash_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args);

MP_DEFINE_CONST_OBJ_TYPE(sha256_type, MP_QSTR_sha256, MP_TYPE_FLAG_NONE,
    make_new, hash_make_new, locals_dict, &hash_locals);

static mp_obj_t hash_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 0, 1, false);
    hash_obj_t *self = mp_obj_malloc(hash_obj_t, type);
    sha256_init(&self->state);
    if (n_args == 1) {
        hash_update(MP_OBJ_FROM_PTR(self), args[0]);
    }
    return MP_OBJ_FROM_PTR(self);
}

static const mp_rom_map_elem_t hashlib_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_hashlib) },
    { MP_ROM_QSTR(MP_QSTR_sha256), MP_ROM_PTR(&sha256_type) },
};
MP32_MODULE(hashlib)
