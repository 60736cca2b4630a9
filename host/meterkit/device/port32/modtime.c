// `time`: a test-only STAND-IN for extmod's time module (not in the sdist), with the ESP32's semantics: the
// ticks_* counters wrap at 2^30 (MICROPY_PY_TIME_TICKS_PERIOD, so every tick is a small int), and time()
// counts seconds from 2000-01-01 (the embedded epoch; meter/hal.py adds EPOCH_2000_OFFSET).

#include "py/mphal.h"
#include "py/runtime.h"
#include "mp32port.h"
#include "py/smallint.h"
#include "shared/timeutils/timeutils.h"

#define PERIOD ((mp_uint_t)MICROPY_PY_TIME_TICKS_PERIOD)
#define MASK (PERIOD - 1)
#define SECONDS_1970_TO_2000 (946684800LL)

static mp_obj_t ticks(mp_uint_t t) {
    return MP_OBJ_NEW_SMALL_INT(t & MASK);
}

static mp_obj_t time_ticks_ms(void) {
    return ticks(mp_hal_ticks_ms());
}
static MP_DEFINE_CONST_FUN_OBJ_0(time_ticks_ms_obj, time_ticks_ms);

static mp_obj_t time_ticks_us(void) {
    return ticks(mp_hal_ticks_us());
}
static MP_DEFINE_CONST_FUN_OBJ_0(time_ticks_us_obj, time_ticks_us);

static mp_obj_t time_ticks_cpu(void) {
    return ticks(mp_hal_ticks_cpu());
}
static MP_DEFINE_CONST_FUN_OBJ_0(time_ticks_cpu_obj, time_ticks_cpu);

// Signed end - start modulo the period, in (-PERIOD/2, PERIOD/2].
static mp_obj_t time_ticks_diff(mp_obj_t end_in, mp_obj_t start_in) {
    mp_uint_t d = ((mp_uint_t)MP_OBJ_SMALL_INT_VALUE(end_in) - (mp_uint_t)MP_OBJ_SMALL_INT_VALUE(start_in)
        + PERIOD / 2) & MASK;
    return MP_OBJ_NEW_SMALL_INT((mp_int_t)d - (mp_int_t)(PERIOD / 2));
}
static MP_DEFINE_CONST_FUN_OBJ_2(time_ticks_diff_obj, time_ticks_diff);

static mp_obj_t time_ticks_add(mp_obj_t ticks_in, mp_obj_t delta_in) {
    return ticks((mp_uint_t)MP_OBJ_SMALL_INT_VALUE(ticks_in) + (mp_uint_t)mp_obj_get_int(delta_in));
}
static MP_DEFINE_CONST_FUN_OBJ_2(time_ticks_add_obj, time_ticks_add);

static mp_obj_t time_sleep(mp_obj_t s) {
    mp_hal_delay_us((mp_uint_t)(mp_obj_get_float(s) * 1000000));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(time_sleep_obj, time_sleep);

static mp_obj_t sleep_for(mp_obj_t n_in, void (*delay)(mp_uint_t)) {
    mp_int_t n = mp_obj_get_int(n_in);
    if (n > 0) {
        delay(n);
    }
    return mp_const_none;
}

static mp_obj_t time_sleep_ms(mp_obj_t ms) {
    return sleep_for(ms, mp_hal_delay_ms);
}
static MP_DEFINE_CONST_FUN_OBJ_1(time_sleep_ms_obj, time_sleep_ms);

static mp_obj_t time_sleep_us(mp_obj_t us) {
    return sleep_for(us, mp_hal_delay_us);
}
static MP_DEFINE_CONST_FUN_OBJ_1(time_sleep_us_obj, time_sleep_us);

static long long seconds_since_2000(void) {
    return (long long)(mp_hal_time_ns() / 1000000000u) - SECONDS_1970_TO_2000;
}

static mp_obj_t time_time(void) {
    return mp_obj_new_int_from_ll(seconds_since_2000());
}
static MP_DEFINE_CONST_FUN_OBJ_0(time_time_obj, time_time);

static mp_obj_t time_time_ns(void) {
    return mp_obj_new_int_from_ull(mp_hal_time_ns() - (unsigned long long)SECONDS_1970_TO_2000 * 1000000000u);
}
static MP_DEFINE_CONST_FUN_OBJ_0(time_time_ns_obj, time_time_ns);

// gmtime/localtime([secs since 2000]) -> (year, month, mday, hour, minute, second, weekday, yearday); UTC.
static mp_obj_t time_gmtime(size_t n_args, const mp_obj_t *args) {
    long long s = (n_args == 0 || args[0] == mp_const_none) ? seconds_since_2000() : mp_obj_get_int(args[0]);
    timeutils_struct_time_t tm;
    timeutils_seconds_since_1970_to_struct_time(s + SECONDS_1970_TO_2000, &tm);
    mp_obj_t t[8] = {
        mp_obj_new_int(tm.tm_year), mp_obj_new_int(tm.tm_mon), mp_obj_new_int(tm.tm_mday),
        mp_obj_new_int(tm.tm_hour), mp_obj_new_int(tm.tm_min), mp_obj_new_int(tm.tm_sec),
        mp_obj_new_int(tm.tm_wday), mp_obj_new_int(tm.tm_yday),
    };
    return mp_obj_new_tuple(8, t);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(time_gmtime_obj, 0, 1, time_gmtime);

static const mp_rom_map_elem_t time_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_time) },
    { MP_ROM_QSTR(MP_QSTR_ticks_ms), MP_ROM_PTR(&time_ticks_ms_obj) },
    { MP_ROM_QSTR(MP_QSTR_ticks_us), MP_ROM_PTR(&time_ticks_us_obj) },
    { MP_ROM_QSTR(MP_QSTR_ticks_cpu), MP_ROM_PTR(&time_ticks_cpu_obj) },
    { MP_ROM_QSTR(MP_QSTR_ticks_diff), MP_ROM_PTR(&time_ticks_diff_obj) },
    { MP_ROM_QSTR(MP_QSTR_ticks_add), MP_ROM_PTR(&time_ticks_add_obj) },
    { MP_ROM_QSTR(MP_QSTR_sleep), MP_ROM_PTR(&time_sleep_obj) },
    { MP_ROM_QSTR(MP_QSTR_sleep_ms), MP_ROM_PTR(&time_sleep_ms_obj) },
    { MP_ROM_QSTR(MP_QSTR_sleep_us), MP_ROM_PTR(&time_sleep_us_obj) },
    { MP_ROM_QSTR(MP_QSTR_time), MP_ROM_PTR(&time_time_obj) },
    { MP_ROM_QSTR(MP_QSTR_time_ns), MP_ROM_PTR(&time_time_ns_obj) },
    { MP_ROM_QSTR(MP_QSTR_gmtime), MP_ROM_PTR(&time_gmtime_obj) },
    { MP_ROM_QSTR(MP_QSTR_localtime), MP_ROM_PTR(&time_gmtime_obj) },
};
MP32_MODULE(time)
