// HAL of the mp32 port: the output of print() and of tracebacks, sys.stdin/stdout/stderr, the clocks,
// sleeping, and the import lookup on the host's file system.

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "py/builtin.h"
#include "py/mperrno.h"
#include "py/mphal.h"
#include "py/runtime.h"
#include "py/stream.h"
#include "mp32port.h"

// -- stdio ------------------------------------------------------------------------------------------------------

static void write_all(int fd, const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return;  // nowhere left to report it
        }
        s += w;
        n -= (size_t)w;
    }
}

mp_uint_t mp_hal_stdout_tx_strn(const char *str, size_t len) {
    write_all(1, str, len);
    return len;
}

static void stderr_strn(void *env, const char *str, size_t len) {
    (void)env;
    write_all(2, str, len);
}

const mp_print_t mp_stderr_print = {NULL, stderr_strn};

// sys.stdin/stdout/stderr: file descriptors 0, 1 and 2 as text streams (fileio.c), each with a .buffer.
static void stdio_attr(mp_obj_t self_in, qstr attr, mp_obj_t *dest);

static MP_DEFINE_CONST_OBJ_TYPE(stdio_text_type, MP_QSTR_TextIOWrapper, MP_TYPE_FLAG_ITER_IS_STREAM,
    protocol, &mp32_fd_text_p, attr, stdio_attr, locals_dict, &mp32_fd_locals);

const mp32_fd_obj_t mp_sys_stdin_obj = {{&stdio_text_type}, 0};
const mp32_fd_obj_t mp_sys_stdout_obj = {{&stdio_text_type}, 1};
const mp32_fd_obj_t mp_sys_stderr_obj = {{&stdio_text_type}, 2};
static const mp32_fd_obj_t stdio_buffers[3] = {
    {{&mp32_file_bytes_type}, 0}, {{&mp32_file_bytes_type}, 1}, {{&mp32_file_bytes_type}, 2},
};

static void stdio_attr(mp_obj_t self_in, qstr attr, mp_obj_t *dest) {
    if (dest[0] == MP_OBJ_NULL && attr == MP_QSTR_buffer) {
        dest[0] = MP_OBJ_FROM_PTR(&stdio_buffers[((mp32_fd_obj_t *)MP_OBJ_TO_PTR(self_in))->fd]);
        return;
    }
    dest[1] = MP_OBJ_SENTINEL;  // everything else: the locals dict
}

// -- time ---------------------------------------------------------------------------------------------------

static uint64_t monotonic_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

// Free-running counters; the time stand-in (modtime.c) folds them into the 2^30 tick period.
mp_uint_t mp_hal_ticks_ms(void) {
    return (mp_uint_t)(monotonic_ns() / 1000000u);
}

mp_uint_t mp_hal_ticks_us(void) {
    return (mp_uint_t)(monotonic_ns() / 1000u);
}

mp_uint_t mp_hal_ticks_cpu(void) {
    return (mp_uint_t)monotonic_ns();
}

uint64_t mp_hal_time_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

void mp_hal_delay_us(mp_uint_t us) {
    uint64_t end = monotonic_ns() + (uint64_t)us * 1000u;
    for (;;) {
        uint64_t now = monotonic_ns();
        if (now >= end) {
            return;
        }
        uint64_t left = end - now;
        struct timespec t = {(time_t)(left / 1000000000u), (long)(left % 1000000000u)};
        nanosleep(&t, NULL);  // EINTR: loop, after a pending KeyboardInterrupt has had its chance
        mp_handle_pending(true);
    }
}

void mp_hal_delay_ms(mp_uint_t ms) {
    mp_hal_delay_us(ms * 1000u);
}

// -- import ---------------------------------------------------------------------------------------------------

mp_import_stat_t mp_import_stat(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        return MP_IMPORT_STAT_NO_EXIST;
    }
    return S_ISDIR(st.st_mode) ? MP_IMPORT_STAT_DIR : MP_IMPORT_STAT_FILE;
}
