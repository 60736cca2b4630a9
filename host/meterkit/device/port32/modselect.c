// `select` and `socket`: test-only STAND-INS for extmod's modselect and the Unix port's modsocket (neither is
// in the sdist), on POSIX poll(2) and BSD sockets, with the Unix port's semantics: POLLERR and POLLHUP are
// reported whether registered or not (an ESP32's poll reports only registered events), and an address from
// getaddrinfo() is an opaque bytes object (a struct sockaddr) that bind() and connect() take back.

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "py/mperrno.h"
#include "py/objlist.h"
#include "py/runtime.h"
#include "py/stream.h"
#include "mp32port.h"

// -- select.poll ---------------------------------------------------------------------------------------------

// Events by their MicroPython names; the values are Linux's poll(2) bits (MP_STREAM_POLL_* are the same).
#define EV_IN (MP_STREAM_POLL_RD)
#define EV_OUT (MP_STREAM_POLL_WR)
#define EV_ERR (MP_STREAM_POLL_ERR)
#define EV_HUP (MP_STREAM_POLL_HUP)

typedef struct _poll_obj_t {
    mp_obj_base_t base;
    mp_obj_t registered;  // dict: object -> event mask
} poll_obj_t;

// A file descriptor for obj (an int, or a stream that knows its own), or -1.
static int fd_of(mp_obj_t obj) {
    if (mp_obj_is_small_int(obj)) {
        return MP_OBJ_SMALL_INT_VALUE(obj);
    }
    const mp_stream_p_t *s = mp_get_stream_raise(obj, MP_STREAM_OP_IOCTL);
    int err = 0;
    mp_uint_t fd = s->ioctl(obj, MP_STREAM_GET_FILENO, 0, &err);
    return fd == MP_STREAM_ERROR ? -1 : (int)fd;
}

static mp_obj_t poll_register(size_t n_args, const mp_obj_t *args) {
    poll_obj_t *self = MP_OBJ_TO_PTR(args[0]);
    mp_obj_t mask = n_args > 2 ? args[2] : MP_OBJ_NEW_SMALL_INT(EV_IN | EV_OUT);
    fd_of(args[1]);  // TypeError now for an object that cannot be polled
    mp_obj_dict_store(self->registered, args[1], mask);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(poll_register_obj, 2, 3, poll_register);

static mp_obj_t poll_modify(mp_obj_t self_in, mp_obj_t obj, mp_obj_t mask) {
    poll_obj_t *self = MP_OBJ_TO_PTR(self_in);
    mp_map_elem_t *e = mp_map_lookup(mp_obj_dict_get_map(self->registered), obj, MP_MAP_LOOKUP);
    if (e == NULL) {
        mp_raise_OSError(MP_ENOENT);
    }
    e->value = mask;
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_3(poll_modify_obj, poll_modify);

static mp_obj_t poll_unregister(mp_obj_t self_in, mp_obj_t obj) {
    poll_obj_t *self = MP_OBJ_TO_PTR(self_in);
    mp_map_lookup(mp_obj_dict_get_map(self->registered), obj, MP_MAP_LOOKUP_REMOVE_IF_FOUND);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(poll_unregister_obj, poll_unregister);

// poll([timeout_ms]) -> [(obj, events), ...]; POLLNVAL (a closed descriptor) shows as POLLERR | POLLHUP.
static mp_obj_t poll_poll(size_t n_args, const mp_obj_t *args) {
    poll_obj_t *self = MP_OBJ_TO_PTR(args[0]);
    int timeout = (n_args > 1 && args[1] != mp_const_none) ? mp_obj_get_int(args[1]) : -1;
    mp_map_t *map = mp_obj_dict_get_map(self->registered);
    size_t n = map->used;
    struct pollfd *fds = m_new(struct pollfd, n ? n : 1);
    mp_obj_t *objs = m_new(mp_obj_t, n ? n : 1);
    size_t k = 0;
    for (size_t i = 0; i < map->alloc; i++) {
        if (!mp_map_slot_is_filled(map, i)) {
            continue;
        }
        objs[k] = map->table[i].key;
        fds[k].fd = fd_of(objs[k]);
        fds[k].events = (short)mp_obj_get_int(map->table[i].value);
        fds[k].revents = 0;
        k++;
    }
    int r;
    do {
        r = poll(fds, k, timeout);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        int e = errno;
        m_del(struct pollfd, fds, n ? n : 1);
        m_del(mp_obj_t, objs, n ? n : 1);
        mp_raise_OSError(e);
    }
    mp_obj_t out = mp_obj_new_list(0, NULL);
    for (size_t i = 0; i < k; i++) {
        int ev = fds[i].revents & (EV_IN | EV_OUT | EV_ERR | EV_HUP);
        if (fds[i].revents & POLLNVAL) {
            ev |= EV_ERR | EV_HUP;
        }
        if (ev) {
            mp_obj_t t[2] = {objs[i], MP_OBJ_NEW_SMALL_INT(ev)};
            mp_obj_list_append(out, mp_obj_new_tuple(2, t));
        }
    }
    m_del(struct pollfd, fds, n ? n : 1);
    m_del(mp_obj_t, objs, n ? n : 1);
    return out;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(poll_poll_obj, 1, 2, poll_poll);

static const mp_rom_map_elem_t poll_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_register), MP_ROM_PTR(&poll_register_obj) },
    { MP_ROM_QSTR(MP_QSTR_modify), MP_ROM_PTR(&poll_modify_obj) },
    { MP_ROM_QSTR(MP_QSTR_unregister), MP_ROM_PTR(&poll_unregister_obj) },
    { MP_ROM_QSTR(MP_QSTR_poll), MP_ROM_PTR(&poll_poll_obj) },
};
static MP_DEFINE_CONST_DICT(poll_locals, poll_locals_table);

MP_DEFINE_CONST_OBJ_TYPE(poll_type, MP_QSTR_poll, MP_TYPE_FLAG_NONE, locals_dict, &poll_locals);

static mp_obj_t select_poll(void) {
    poll_obj_t *p = mp_obj_malloc(poll_obj_t, &poll_type);
    p->registered = mp_obj_new_dict(0);
    return MP_OBJ_FROM_PTR(p);
}
static MP_DEFINE_CONST_FUN_OBJ_0(select_poll_obj, select_poll);

static const mp_rom_map_elem_t select_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_select) },
    { MP_ROM_QSTR(MP_QSTR_poll), MP_ROM_PTR(&select_poll_obj) },
    { MP_ROM_QSTR(MP_QSTR_POLLIN), MP_ROM_INT(EV_IN) },
    { MP_ROM_QSTR(MP_QSTR_POLLOUT), MP_ROM_INT(EV_OUT) },
    { MP_ROM_QSTR(MP_QSTR_POLLERR), MP_ROM_INT(EV_ERR) },
    { MP_ROM_QSTR(MP_QSTR_POLLHUP), MP_ROM_INT(EV_HUP) },
};
MP32_MODULE(select)

// -- socket -----------------------------------------------------------------------------------------------------

static const mp_obj_type_t socket_type;

static int check(int r) {
    if (r < 0) {
        mp_raise_OSError(errno);
    }
    return r;
}

static mp32_fd_obj_t *sock(mp_obj_t self_in) {
    mp32_fd_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (self->fd < 0) {
        mp_raise_OSError(MP_EBADF);
    }
    return self;
}

// A socket is also a file descriptor stream (fileio.c): read, readinto, write, close, fileno, ... come from
// there; the socket calls from its own table.
static void socket_attr(mp_obj_t self_in, qstr attr, mp_obj_t *dest) {
    if (dest[0] == MP_OBJ_NULL) {
        mp_map_elem_t *e = mp_map_lookup((mp_map_t *)&mp32_fd_locals.map, MP_OBJ_NEW_QSTR(attr), MP_MAP_LOOKUP);
        if (e != NULL) {
            mp_convert_member_lookup(self_in, &socket_type, e->value, dest);
            return;
        }
    }
    dest[1] = MP_OBJ_SENTINEL;
}

static mp_obj_t socket_setsockopt(size_t n_args, const mp_obj_t *args) {
    int v = mp_obj_get_int(args[3]);
    check(setsockopt(sock(args[0])->fd, mp_obj_get_int(args[1]), mp_obj_get_int(args[2]), &v, sizeof(v)));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(socket_setsockopt_obj, 4, 4, socket_setsockopt);

static mp_obj_t socket_setblocking(mp_obj_t self_in, mp_obj_t flag) {
    int fd = sock(self_in)->fd;
    int fl = check(fcntl(fd, F_GETFL));
    check(fcntl(fd, F_SETFL, mp_obj_is_true(flag) ? fl & ~O_NONBLOCK : fl | O_NONBLOCK));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(socket_setblocking_obj, socket_setblocking);

// bind() or connect() to an address from getaddrinfo(): a struct sockaddr in a bytes object
static mp_obj_t to_address(mp_obj_t self_in, mp_obj_t addr, int (*call)(int, const struct sockaddr *, socklen_t)) {
    mp_buffer_info_t b;
    mp_get_buffer_raise(addr, &b, MP_BUFFER_READ);
    check(call(sock(self_in)->fd, b.buf, b.len));
    return mp_const_none;
}

static mp_obj_t socket_bind(mp_obj_t self_in, mp_obj_t addr) {
    return to_address(self_in, addr, bind);
}
static MP_DEFINE_CONST_FUN_OBJ_2(socket_bind_obj, socket_bind);

static mp_obj_t socket_connect(mp_obj_t self_in, mp_obj_t addr) {
    return to_address(self_in, addr, connect);
}
static MP_DEFINE_CONST_FUN_OBJ_2(socket_connect_obj, socket_connect);

static mp_obj_t socket_listen(size_t n_args, const mp_obj_t *args) {
    check(listen(sock(args[0])->fd, n_args > 1 ? mp_obj_get_int(args[1]) : 2));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(socket_listen_obj, 1, 2, socket_listen);

static mp_obj_t socket_accept(mp_obj_t self_in) {
    struct sockaddr_storage a;
    socklen_t n = sizeof(a);
    int fd = check(accept(sock(self_in)->fd, (struct sockaddr *)&a, &n));
    mp_obj_t t[2] = {mp32_fd_new(&socket_type, fd), mp_obj_new_bytes((const byte *)&a, n)};
    return mp_obj_new_tuple(2, t);
}
static MP_DEFINE_CONST_FUN_OBJ_1(socket_accept_obj, socket_accept);

static mp_obj_t socket_send(mp_obj_t self_in, mp_obj_t data) {
    mp_buffer_info_t b;
    mp_get_buffer_raise(data, &b, MP_BUFFER_READ);
    return MP_OBJ_NEW_SMALL_INT(check(send(sock(self_in)->fd, b.buf, b.len, MSG_NOSIGNAL)));
}
static MP_DEFINE_CONST_FUN_OBJ_2(socket_send_obj, socket_send);

static mp_obj_t socket_recv(mp_obj_t self_in, mp_obj_t n_in) {
    vstr_t v;
    vstr_init_len(&v, mp_obj_get_int(n_in));
    ssize_t n = recv(sock(self_in)->fd, v.buf, v.len, 0);
    if (n < 0) {
        vstr_clear(&v);
        mp_raise_OSError(errno);
    }
    v.len = n;
    return mp_obj_new_bytes_from_vstr(&v);
}
static MP_DEFINE_CONST_FUN_OBJ_2(socket_recv_obj, socket_recv);

static const mp_rom_map_elem_t socket_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_setsockopt), MP_ROM_PTR(&socket_setsockopt_obj) },
    { MP_ROM_QSTR(MP_QSTR_setblocking), MP_ROM_PTR(&socket_setblocking_obj) },
    { MP_ROM_QSTR(MP_QSTR_bind), MP_ROM_PTR(&socket_bind_obj) },
    { MP_ROM_QSTR(MP_QSTR_connect), MP_ROM_PTR(&socket_connect_obj) },
    { MP_ROM_QSTR(MP_QSTR_listen), MP_ROM_PTR(&socket_listen_obj) },
    { MP_ROM_QSTR(MP_QSTR_accept), MP_ROM_PTR(&socket_accept_obj) },
    { MP_ROM_QSTR(MP_QSTR_send), MP_ROM_PTR(&socket_send_obj) },
    { MP_ROM_QSTR(MP_QSTR_recv), MP_ROM_PTR(&socket_recv_obj) },
};
static MP_DEFINE_CONST_DICT(socket_locals, socket_locals_table);

static mp_obj_t socket_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 0, 3, false);
    int family = n_args > 0 ? mp_obj_get_int(args[0]) : AF_INET;
    int kind = n_args > 1 ? mp_obj_get_int(args[1]) : SOCK_STREAM;
    int proto = n_args > 2 ? mp_obj_get_int(args[2]) : 0;
    return mp32_fd_new(&socket_type, check(socket(family, kind | SOCK_CLOEXEC, proto)));
}

static MP_DEFINE_CONST_OBJ_TYPE(socket_type, MP_QSTR_socket, MP_TYPE_FLAG_NONE,
    make_new, socket_make_new, protocol, &mp32_fd_bytes_p, attr, socket_attr, locals_dict, &socket_locals);

// getaddrinfo(host, port) -> [(family, type, proto, '', sockaddr bytes), ...], TCP only
static mp_obj_t socket_getaddrinfo(size_t n_args, const mp_obj_t *args) {
    const char *host = mp_obj_str_get_str(args[0]);
    char port[12];
    snprintf(port, sizeof(port), "%d", (int)mp_obj_get_int(args[1]));
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    int r = getaddrinfo(host, port, &hints, &res);
    if (r != 0) {
        mp_raise_OSError(r == EAI_SYSTEM ? errno : MP_ENOENT);
    }
    mp_obj_t out = mp_obj_new_list(0, NULL);
    for (struct addrinfo *a = res; a != NULL; a = a->ai_next) {
        mp_obj_t t[5] = {MP_OBJ_NEW_SMALL_INT(a->ai_family), MP_OBJ_NEW_SMALL_INT(a->ai_socktype),
                         MP_OBJ_NEW_SMALL_INT(a->ai_protocol), MP_OBJ_NEW_QSTR(MP_QSTR_),
                         mp_obj_new_bytes((const byte *)a->ai_addr, a->ai_addrlen)};
        mp_obj_list_append(out, mp_obj_new_tuple(5, t));
    }
    freeaddrinfo(res);
    return out;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(socket_getaddrinfo_obj, 2, 6, socket_getaddrinfo);

static const mp_rom_map_elem_t socket_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_socket) },
    { MP_ROM_QSTR(MP_QSTR_socket), MP_ROM_PTR(&socket_type) },
    { MP_ROM_QSTR(MP_QSTR_getaddrinfo), MP_ROM_PTR(&socket_getaddrinfo_obj) },
    { MP_ROM_QSTR(MP_QSTR_AF_INET), MP_ROM_INT(AF_INET) },
    { MP_ROM_QSTR(MP_QSTR_SOCK_STREAM), MP_ROM_INT(SOCK_STREAM) },
    { MP_ROM_QSTR(MP_QSTR_SOL_SOCKET), MP_ROM_INT(SOL_SOCKET) },
    { MP_ROM_QSTR(MP_QSTR_SO_REUSEADDR), MP_ROM_INT(SO_REUSEADDR) },
};
MP32_MODULE(socket)
