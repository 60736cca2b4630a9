// What the files of the mp32 port share: the file-descriptor streams (fileio.c) behind files, sockets and
// sys.stdin/stdout/stderr, and the definition of a stand-in module.

#include "py/obj.h"
#include "py/stream.h"

// Every object with a file descriptor: a file, a socket, a stdio stream. fd < 0 once closed.
typedef struct _mp32_fd_obj_t {
    mp_obj_base_t base;
    int fd;
} mp32_fd_obj_t;

extern const mp_stream_p_t mp32_fd_bytes_p;  // read, write, ioctl (flush, seek, poll, close, fileno)
extern const mp_stream_p_t mp32_fd_text_p;   // the same, str in and out
extern const mp_obj_dict_t mp32_fd_locals;   // read, readinto, readline(s), write, seek, tell, flush, close,
                                             // fileno, __del__, __enter__, __exit__
extern const mp_obj_type_t mp32_file_bytes_type;  // FileIO
mp_obj_t mp32_fd_new(const mp_obj_type_t *type, int fd);

// A module `name` from its table `name_globals_table`, registered as a built-in module of that name.
#define MP32_MODULE(name) \
    static MP_DEFINE_CONST_DICT(name##_globals, name##_globals_table); \
    const mp_obj_module_t mp32_##name##_module = { \
        .base = { &mp_type_module }, \
        .globals = (mp_obj_dict_t *)&name##_globals, \
    }; \
    MP_REGISTER_MODULE(MP_QSTR_##name, mp32_##name##_module);
