// `random`: a test-only STAND-IN for extmod's random (not in the sdist): seed, getrandbits (up to 32 bits, as
// MicroPython's), randint, randrange, random. A xorshift32 generator, seeded from the host at start; its
// sequences differ from MicroPython's (no test may depend on them: CPython's differ as well).

#include <sys/random.h>

#include "py/runtime.h"
#include "mp32port.h"

static uint32_t state;

static uint32_t next32(void) {
    if (state == 0) {
        while (getrandom(&state, sizeof(state), 0) != sizeof(state) || state == 0) {
        }
    }
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    return state;
}

static mp_obj_t random_seed(size_t n_args, const mp_obj_t *args) {
    if (n_args == 0 || args[0] == mp_const_none) {
        state = 0;  // seeded from the host at the next draw
        return mp_const_none;
    }
    state = (uint32_t)mp_obj_get_int_truncated(args[0]) * 2654435761u;  // small seeds spread over all bits
    if (state == 0) {
        state = 0x9e3779b9u;  // zero is xorshift's fixed point
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(random_seed_obj, 0, 1, random_seed);

static mp_obj_t random_getrandbits(mp_obj_t k_in) {
    mp_int_t k = mp_obj_get_int(k_in);
    if (k < 0 || k > 32) {
        mp_raise_ValueError(MP_ERROR_TEXT("bits must be 32 or less"));
    }
    return mp_obj_new_int_from_uint(k ? next32() >> (32 - k) : 0);
}
static MP_DEFINE_CONST_FUN_OBJ_1(random_getrandbits_obj, random_getrandbits);

// A uniform value in [0, n), n < 2^31, by rejection.
static mp_int_t below(mp_int_t n) {
    if (n <= 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("empty range"));
    }
    uint32_t mask = 1;
    while (mask < (uint32_t)n - 1) {
        mask = mask << 1 | 1;
    }
    uint32_t r;
    do {
        r = next32() & mask;
    } while (r >= (uint32_t)n);
    return (mp_int_t)r;
}

static mp_obj_t random_randrange(size_t n_args, const mp_obj_t *args) {
    mp_int_t start = n_args > 1 ? mp_obj_get_int(args[0]) : 0;
    mp_int_t stop = mp_obj_get_int(args[n_args > 1 ? 1 : 0]);
    return mp_obj_new_int(start + below(stop - start));
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(random_randrange_obj, 1, 2, random_randrange);

static mp_obj_t random_randint(mp_obj_t a, mp_obj_t b) {
    mp_int_t lo = mp_obj_get_int(a);
    return mp_obj_new_int(lo + below(mp_obj_get_int(b) - lo + 1));
}
static MP_DEFINE_CONST_FUN_OBJ_2(random_randint_obj, random_randint);

static mp_obj_t random_random(void) {
    return mp_obj_new_float((mp_float_t)(next32() >> 8) / (mp_float_t)(1 << 24));
}
static MP_DEFINE_CONST_FUN_OBJ_0(random_random_obj, random_random);

static const mp_rom_map_elem_t random_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_random) },
    { MP_ROM_QSTR(MP_QSTR_seed), MP_ROM_PTR(&random_seed_obj) },
    { MP_ROM_QSTR(MP_QSTR_getrandbits), MP_ROM_PTR(&random_getrandbits_obj) },
    { MP_ROM_QSTR(MP_QSTR_randrange), MP_ROM_PTR(&random_randrange_obj) },
    { MP_ROM_QSTR(MP_QSTR_randint), MP_ROM_PTR(&random_randint_obj) },
    { MP_ROM_QSTR(MP_QSTR_random), MP_ROM_PTR(&random_random_obj) },
};
MP32_MODULE(random)
