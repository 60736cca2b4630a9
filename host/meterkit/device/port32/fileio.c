// open() and the file objects of the mp32 port: STAND-IN for extmod's VFS files (not in the sdist), on the
// host's POSIX file system. Test-only: a board's files are LittleFS (vfs.VfsLfs2), whose power-loss behaviour
// this does not model. Errors are OSError(errno), as from extmod's VfsPosix. The stream code here serves
// every file descriptor of the port: files, sockets (modselect.c) and sys.stdin/stdout/stderr (hal.c).

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "py/builtin.h"
#include "py/mperrno.h"
#include "py/runtime.h"
#include "mp32port.h"

static int fd_of(mp_obj_t self_in, int *errcode) {
    int fd = ((mp32_fd_obj_t *)MP_OBJ_TO_PTR(self_in))->fd;
    if (fd < 0) {
        *errcode = MP_EBADF;
    }
    return fd;
}

// read() or write() once, again after EINTR; n bytes, or MP_STREAM_ERROR with the errno.
static mp_uint_t fd_io(mp_obj_t self_in, void *buf, mp_uint_t size, int *errcode, bool out) {
    int fd = fd_of(self_in, errcode);
    if (fd < 0) {
        return MP_STREAM_ERROR;
    }
    ssize_t n;
    do {
        n = out ? write(fd, buf, size) : read(fd, buf, size);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        *errcode = errno;
        return MP_STREAM_ERROR;
    }
    return (mp_uint_t)n;
}

static mp_uint_t fd_read(mp_obj_t self_in, void *buf, mp_uint_t size, int *errcode) {
    return fd_io(self_in, buf, size, errcode, false);
}

static mp_uint_t fd_write(mp_obj_t self_in, const void *buf, mp_uint_t size, int *errcode) {
    return fd_io(self_in, (void *)buf, size, errcode, true);
}

static mp_uint_t fd_poll(int fd, uintptr_t want) {
    struct pollfd p = {fd, (short)(want & (MP_STREAM_POLL_RD | MP_STREAM_POLL_WR)), 0};
    poll(&p, 1, 0);  // the MP_STREAM_POLL_* bits are Linux's POLL* bits
    return p.revents & (MP_STREAM_POLL_RD | MP_STREAM_POLL_WR | MP_STREAM_POLL_ERR | MP_STREAM_POLL_HUP);
}

static mp_uint_t fd_ioctl(mp_obj_t self_in, mp_uint_t request, uintptr_t arg, int *errcode) {
    mp32_fd_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (request == MP_STREAM_CLOSE) {
        if (self->fd > 2) {  // stdio stays open (and its objects are constants)
            close(self->fd);
            self->fd = -1;
        }
        return 0;
    }
    int fd = fd_of(self_in, errcode);
    if (fd < 0) {
        return MP_STREAM_ERROR;
    }
    switch (request) {
        case MP_STREAM_FLUSH:
            return 0;  // unbuffered: every write() went to the OS
        case MP_STREAM_SEEK: {
            struct mp_stream_seek_t *s = (struct mp_stream_seek_t *)arg;
            off_t off = lseek(fd, s->offset, s->whence);
            if (off < 0) {
                *errcode = errno;
                return MP_STREAM_ERROR;
            }
            s->offset = off;
            return 0;
        }
        case MP_STREAM_POLL:
            return fd_poll(fd, arg);
        case MP_STREAM_GET_FILENO:
            return fd;
        default:
            *errcode = MP_EINVAL;
            return MP_STREAM_ERROR;
    }
}

const mp_stream_p_t mp32_fd_bytes_p = {.read = fd_read, .write = fd_write, .ioctl = fd_ioctl};
const mp_stream_p_t mp32_fd_text_p = {.read = fd_read, .write = fd_write, .ioctl = fd_ioctl, .is_text = true};

static mp_obj_t fd_fileno(mp_obj_t self_in) {
    int err = 0;
    int fd = fd_of(self_in, &err);
    if (fd < 0) {
        mp_raise_OSError(err);
    }
    return MP_OBJ_NEW_SMALL_INT(fd);
}
static MP_DEFINE_CONST_FUN_OBJ_1(fd_fileno_obj, fd_fileno);

static const mp_rom_map_elem_t fd_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_read), MP_ROM_PTR(&mp_stream_read_obj) },
    { MP_ROM_QSTR(MP_QSTR_readinto), MP_ROM_PTR(&mp_stream_readinto_obj) },
    { MP_ROM_QSTR(MP_QSTR_readline), MP_ROM_PTR(&mp_stream_unbuffered_readline_obj) },
    { MP_ROM_QSTR(MP_QSTR_readlines), MP_ROM_PTR(&mp_stream_unbuffered_readlines_obj) },
    { MP_ROM_QSTR(MP_QSTR_write), MP_ROM_PTR(&mp_stream_write_obj) },
    { MP_ROM_QSTR(MP_QSTR_seek), MP_ROM_PTR(&mp_stream_seek_obj) },
    { MP_ROM_QSTR(MP_QSTR_tell), MP_ROM_PTR(&mp_stream_tell_obj) },
    { MP_ROM_QSTR(MP_QSTR_flush), MP_ROM_PTR(&mp_stream_flush_obj) },
    { MP_ROM_QSTR(MP_QSTR_close), MP_ROM_PTR(&mp_stream_close_obj) },
    { MP_ROM_QSTR(MP_QSTR_fileno), MP_ROM_PTR(&fd_fileno_obj) },
    { MP_ROM_QSTR(MP_QSTR___del__), MP_ROM_PTR(&mp_stream_close_obj) },
    { MP_ROM_QSTR(MP_QSTR___enter__), MP_ROM_PTR(&mp_identity_obj) },
    { MP_ROM_QSTR(MP_QSTR___exit__), MP_ROM_PTR(&mp_stream___exit___obj) },
};
MP_DEFINE_CONST_DICT(mp32_fd_locals, fd_locals_table);

MP_DEFINE_CONST_OBJ_TYPE(mp32_file_bytes_type, MP_QSTR_FileIO, MP_TYPE_FLAG_ITER_IS_STREAM,
    protocol, &mp32_fd_bytes_p, locals_dict, &mp32_fd_locals);
static MP_DEFINE_CONST_OBJ_TYPE(file_text_type, MP_QSTR_TextIOWrapper, MP_TYPE_FLAG_ITER_IS_STREAM,
    protocol, &mp32_fd_text_p, locals_dict, &mp32_fd_locals);

mp_obj_t mp32_fd_new(const mp_obj_type_t *type, int fd) {
    mp32_fd_obj_t *f = mp_obj_malloc_with_finaliser(mp32_fd_obj_t, type);
    f->fd = fd;
    return MP_OBJ_FROM_PTR(f);
}

// open(path, mode="r"): modes r w a x, + and b as in CPython; no buffering, no encodings (UTF-8 text).
mp_obj_t mp_builtin_open(size_t n_args, const mp_obj_t *args, mp_map_t *kwargs) {
    enum { ARG_file, ARG_mode };
    static const mp_arg_t allowed[] = {
        { MP_QSTR_file, MP_ARG_REQUIRED | MP_ARG_OBJ, {.u_rom_obj = MP_ROM_NONE} },
        { MP_QSTR_mode, MP_ARG_OBJ, {.u_rom_obj = MP_ROM_QSTR(MP_QSTR_r)} },
    };
    mp_arg_val_t a[MP_ARRAY_SIZE(allowed)];
    mp_arg_parse_all(n_args, args, kwargs, MP_ARRAY_SIZE(allowed), allowed, a);
    const char *path = mp_obj_str_get_str(a[ARG_file].u_obj);
    const char *mode = mp_obj_str_get_str(a[ARG_mode].u_obj);
    int flags = 0;
    int access = O_RDONLY;
    bool text = true;
    for (const char *m = mode; *m; m++) {
        switch (*m) {
            case 'r':
                access = O_RDONLY;
                break;
            case 'w':
                access = O_WRONLY;
                flags |= O_CREAT | O_TRUNC;
                break;
            case 'a':
                access = O_WRONLY;
                flags |= O_CREAT | O_APPEND;
                break;
            case 'x':
                access = O_WRONLY;
                flags |= O_CREAT | O_EXCL;
                break;
            case '+':
                access = O_RDWR;
                break;
            case 'b':
                text = false;
                break;
            case 't':
                text = true;
                break;
            default:
                mp_raise_ValueError(MP_ERROR_TEXT("invalid mode"));
        }
    }
    int fd;
    do {
        fd = open(path, access | flags | O_CLOEXEC, 0644);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        mp_raise_OSError(errno);
    }
    return mp32_fd_new(text ? &file_text_type : &mp32_file_bytes_type, fd);
}
MP_DEFINE_CONST_FUN_OBJ_KW(mp_builtin_open_obj, 1, mp_builtin_open);
