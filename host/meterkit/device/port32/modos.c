// `os`: a test-only STAND-IN for extmod's os module (not in the sdist), on the host's POSIX file system.
// What the firmware and its tests use: listdir, ilistdir, mkdir, rmdir, remove, rename, stat, urandom,
// getenv, getpid (the tests' scratch directories), sep. Errors are OSError(errno), as from extmod's VfsPosix.
// There is no VfsLfs2 (LittleFS): tests that need it are marked as not runnable here (docs/mp32.md).

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "py/mperrno.h"
#include "py/objstr.h"
#include "py/runtime.h"
#include "mp32port.h"

static void check(int r) {
    if (r != 0) {
        mp_raise_OSError(errno);
    }
}

static mp_obj_t entries(size_t n_args, const mp_obj_t *args, bool with_type) {
    const char *path = n_args ? mp_obj_str_get_str(args[0]) : ".";
    DIR *d = opendir(path);
    if (d == NULL) {
        mp_raise_OSError(errno);
    }
    mp_obj_t list = mp_obj_new_list(0, NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        mp_obj_t name = mp_obj_new_str_from_cstr(e->d_name);
        if (!with_type) {
            mp_obj_list_append(list, name);
            continue;
        }
        mp_int_t type = e->d_type == DT_DIR ? 0x4000 : e->d_type == DT_REG ? 0x8000 : 0;
        mp_obj_t t[3] = {name, MP_OBJ_NEW_SMALL_INT(type), MP_OBJ_NEW_SMALL_INT(0)};
        mp_obj_list_append(list, mp_obj_new_tuple(3, t));
    }
    closedir(d);
    return list;
}

static mp_obj_t os_listdir(size_t n_args, const mp_obj_t *args) {
    return entries(n_args, args, false);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(os_listdir_obj, 0, 1, os_listdir);

// (name, type, inode) per entry, type 0x4000 for a directory and 0x8000 for a file, as VfsPosix gives.
static mp_obj_t os_ilistdir(size_t n_args, const mp_obj_t *args) {
    return mp_getiter(entries(n_args, args, true), NULL);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(os_ilistdir_obj, 0, 1, os_ilistdir);

static mp_obj_t os_mkdir(mp_obj_t path) {
    check(mkdir(mp_obj_str_get_str(path), 0777));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(os_mkdir_obj, os_mkdir);

static mp_obj_t os_rmdir(mp_obj_t path) {
    check(rmdir(mp_obj_str_get_str(path)));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(os_rmdir_obj, os_rmdir);

static mp_obj_t os_remove(mp_obj_t path) {
    check(unlink(mp_obj_str_get_str(path)));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(os_remove_obj, os_remove);

static mp_obj_t os_rename(mp_obj_t old, mp_obj_t new) {
    check(rename(mp_obj_str_get_str(old), mp_obj_str_get_str(new)));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(os_rename_obj, os_rename);

// (mode, ino, dev, nlink, uid, gid, size, atime, mtime, ctime); ino/dev/uid/gid as 0, like a board.
static mp_obj_t os_stat(mp_obj_t path) {
    struct stat st;
    check(stat(mp_obj_str_get_str(path), &st));
    mp_obj_t t[10] = {
        MP_OBJ_NEW_SMALL_INT(st.st_mode), MP_OBJ_NEW_SMALL_INT(0), MP_OBJ_NEW_SMALL_INT(0),
        MP_OBJ_NEW_SMALL_INT(st.st_nlink), MP_OBJ_NEW_SMALL_INT(0), MP_OBJ_NEW_SMALL_INT(0),
        mp_obj_new_int_from_ll(st.st_size), mp_obj_new_int_from_ll(st.st_atime),
        mp_obj_new_int_from_ll(st.st_mtime), mp_obj_new_int_from_ll(st.st_ctime),
    };
    return mp_obj_new_tuple(10, t);
}
static MP_DEFINE_CONST_FUN_OBJ_1(os_stat_obj, os_stat);

static mp_obj_t os_urandom(mp_obj_t n_in) {
    mp_int_t n = mp_obj_get_int(n_in);
    vstr_t v;
    vstr_init_len(&v, n);
    for (mp_int_t got = 0; got < n;) {
        ssize_t r = getrandom(v.buf + got, n - got, 0);
        if (r < 0 && errno != EINTR) {
            mp_raise_OSError(errno);
        }
        got += r > 0 ? r : 0;
    }
    return mp_obj_new_bytes_from_vstr(&v);
}
static MP_DEFINE_CONST_FUN_OBJ_1(os_urandom_obj, os_urandom);

static mp_obj_t os_getenv(size_t n_args, const mp_obj_t *args) {
    const char *v = getenv(mp_obj_str_get_str(args[0]));
    if (v == NULL) {
        return n_args > 1 ? args[1] : mp_const_none;
    }
    return mp_obj_new_str_from_cstr(v);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(os_getenv_obj, 1, 2, os_getenv);

static mp_obj_t os_getpid(void) {
    return mp_obj_new_int(getpid());
}
static MP_DEFINE_CONST_FUN_OBJ_0(os_getpid_obj, os_getpid);

static const mp_rom_map_elem_t os_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_os) },
    { MP_ROM_QSTR(MP_QSTR_listdir), MP_ROM_PTR(&os_listdir_obj) },
    { MP_ROM_QSTR(MP_QSTR_ilistdir), MP_ROM_PTR(&os_ilistdir_obj) },
    { MP_ROM_QSTR(MP_QSTR_mkdir), MP_ROM_PTR(&os_mkdir_obj) },
    { MP_ROM_QSTR(MP_QSTR_rmdir), MP_ROM_PTR(&os_rmdir_obj) },
    { MP_ROM_QSTR(MP_QSTR_remove), MP_ROM_PTR(&os_remove_obj) },
    { MP_ROM_QSTR(MP_QSTR_rename), MP_ROM_PTR(&os_rename_obj) },
    { MP_ROM_QSTR(MP_QSTR_stat), MP_ROM_PTR(&os_stat_obj) },
    { MP_ROM_QSTR(MP_QSTR_urandom), MP_ROM_PTR(&os_urandom_obj) },
    { MP_ROM_QSTR(MP_QSTR_getenv), MP_ROM_PTR(&os_getenv_obj) },
    { MP_ROM_QSTR(MP_QSTR_getpid), MP_ROM_PTR(&os_getpid_obj) },
    { MP_ROM_QSTR(MP_QSTR_sep), MP_ROM_QSTR(MP_QSTR__slash_) },
};
MP32_MODULE(os)
