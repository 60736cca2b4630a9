// HAL of the mp32 port: sys.stdin/stdout/stderr on file descriptors 0/1/2, the clocks, sleeping, and the
// import lookup on the host's file system.

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "py/builtin.h"
#include "py/mperrno.h"
#include "py/mphal.h"
#include "py/runtime.h"
#include "py/stream.h"

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

int mp_hal_stdin_rx_chr(void) {
    unsigned char c;
    ssize_t n;
    do {
        n = read(0, &c, 1);
    } while (n < 0 && errno == EINTR);
    return n == 1 ? c : -1;  // -1: end of input
}

typedef struct _stdio_obj_t {
    mp_obj_base_t base;
    int fd;
} stdio_obj_t;

static mp_uint_t stdio_read(mp_obj_t self_in, void *buf, mp_uint_t size, int *errcode) {
    stdio_obj_t *self = MP_OBJ_TO_PTR(self_in);
    ssize_t n;
    do {
        n = read(self->fd, buf, size);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        *errcode = errno;
        return MP_STREAM_ERROR;
    }
    return (mp_uint_t)n;
}

static mp_uint_t stdio_write(mp_obj_t self_in, const void *buf, mp_uint_t size, int *errcode) {
    stdio_obj_t *self = MP_OBJ_TO_PTR(self_in);
    (void)errcode;
    write_all(self->fd, buf, size);
    return size;
}

static mp_uint_t stdio_ioctl(mp_obj_t self_in, mp_uint_t request, uintptr_t arg, int *errcode) {
    stdio_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (request == MP_STREAM_POLL) {
        struct pollfd p = {self->fd, 0, 0};
        if (arg & MP_STREAM_POLL_RD) {
            p.events |= POLLIN;
        }
        if (arg & MP_STREAM_POLL_WR) {
            p.events |= POLLOUT;
        }
        poll(&p, 1, 0);
        mp_uint_t ret = 0;
        if (p.revents & POLLIN) {
            ret |= MP_STREAM_POLL_RD;
        }
        if (p.revents & POLLOUT) {
            ret |= MP_STREAM_POLL_WR;
        }
        return ret;
    }
    if (request == MP_STREAM_FLUSH || request == MP_STREAM_CLOSE) {
        return 0;
    }
    *errcode = MP_EINVAL;
    return MP_STREAM_ERROR;
}

static mp_obj_t stdio_fileno(mp_obj_t self_in) {
    stdio_obj_t *self = MP_OBJ_TO_PTR(self_in);
    return MP_OBJ_NEW_SMALL_INT(self->fd);
}
static MP_DEFINE_CONST_FUN_OBJ_1(stdio_fileno_obj, stdio_fileno);

static void stdio_attr(mp_obj_t self_in, qstr attr, mp_obj_t *dest);

static const mp_rom_map_elem_t stdio_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_read), MP_ROM_PTR(&mp_stream_read_obj) },
    { MP_ROM_QSTR(MP_QSTR_readinto), MP_ROM_PTR(&mp_stream_readinto_obj) },
    { MP_ROM_QSTR(MP_QSTR_readline), MP_ROM_PTR(&mp_stream_unbuffered_readline_obj) },
    { MP_ROM_QSTR(MP_QSTR_readlines), MP_ROM_PTR(&mp_stream_unbuffered_readlines_obj) },
    { MP_ROM_QSTR(MP_QSTR_write), MP_ROM_PTR(&mp_stream_write_obj) },
    { MP_ROM_QSTR(MP_QSTR_flush), MP_ROM_PTR(&mp_stream_flush_obj) },
    { MP_ROM_QSTR(MP_QSTR_fileno), MP_ROM_PTR(&stdio_fileno_obj) },
    { MP_ROM_QSTR(MP_QSTR_close), MP_ROM_PTR(&mp_identity_obj) },
    { MP_ROM_QSTR(MP_QSTR___enter__), MP_ROM_PTR(&mp_identity_obj) },
    { MP_ROM_QSTR(MP_QSTR___exit__), MP_ROM_PTR(&mp_stream___exit___obj) },
};
static MP_DEFINE_CONST_DICT(stdio_locals, stdio_locals_table);

static const mp_stream_p_t stdio_text_p = {.read = stdio_read, .write = stdio_write, .ioctl = stdio_ioctl,
                                            .is_text = true};
static const mp_stream_p_t stdio_bytes_p = {.read = stdio_read, .write = stdio_write, .ioctl = stdio_ioctl};

MP_DEFINE_CONST_OBJ_TYPE(stdio_text_type, MP_QSTR_TextIOWrapper, MP_TYPE_FLAG_ITER_IS_STREAM,
    protocol, &stdio_text_p, attr, stdio_attr, locals_dict, &stdio_locals);
MP_DEFINE_CONST_OBJ_TYPE(stdio_bytes_type, MP_QSTR_FileIO, MP_TYPE_FLAG_ITER_IS_STREAM,
    protocol, &stdio_bytes_p, locals_dict, &stdio_locals);

const stdio_obj_t mp_sys_stdin_obj = {{&stdio_text_type}, 0};
const stdio_obj_t mp_sys_stdout_obj = {{&stdio_text_type}, 1};
const stdio_obj_t mp_sys_stderr_obj = {{&stdio_text_type}, 2};
const stdio_obj_t mp_sys_stdin_buffer_obj = {{&stdio_bytes_type}, 0};
const stdio_obj_t mp_sys_stdout_buffer_obj = {{&stdio_bytes_type}, 1};
const stdio_obj_t mp_sys_stderr_buffer_obj = {{&stdio_bytes_type}, 2};

// sys.stdout.buffer etc.: an attribute, so that the text objects' locals stay one shared table.
static void stdio_attr(mp_obj_t self_in, qstr attr, mp_obj_t *dest) {
    if (dest[0] == MP_OBJ_NULL && attr == MP_QSTR_buffer) {
        static const stdio_obj_t *const buffers[] = {
            &mp_sys_stdin_buffer_obj, &mp_sys_stdout_buffer_obj, &mp_sys_stderr_buffer_obj};
        dest[0] = MP_OBJ_FROM_PTR(buffers[((stdio_obj_t *)MP_OBJ_TO_PTR(self_in))->fd]);
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
