// mp32: the command line of the 32-bit test interpreter. A subset of the Unix port's, so that the same command
// lines run either interpreter:
//
//   micropython [-X heapsize=N[K|M]] SCRIPT [ARG...]     run a file (its directory is sys.path[0])
//   micropython [-X heapsize=N[K|M]] -m MODULE [ARG...]  run a module as __main__
//   micropython [-X heapsize=N[K|M]] -c CODE [ARG...]    run a string
//
// -X heapstats=N collects the garbage after every N bytes allocated and, at exit, prints the largest heap in use
// after a collection (the live peak) to stderr: "mp32: heapstats live_peak=B collections=C heap=H".
// -X freeze=DIR (repeatable) freezes the package DIR (its .mpy files) as a frozen image would: its code lives
// outside the heap and import finds it through `.frozen` on sys.path (frozen.c).
// MICROPYPATH (colon-separated) is the rest of sys.path. Exit status: SystemExit's code, 1 after an uncaught
// exception (its traceback on stderr), 0 otherwise. The heap is one block of host memory, readable, writable
// and executable: .mpy machine code and viper functions live on the GC heap, as they do on a board.

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "py/builtin.h"
#include "py/compile.h"
#include "py/cstack.h"
#include "py/gc.h"
#include "py/lexer.h"
#include "py/mperrno.h"
#include "py/mphal.h"
#include "py/parse.h"
#include "py/runtime.h"
#include "py/stackctrl.h"
#include "shared/runtime/gchelper.h"

#define DEFAULT_HEAP (1024 * 1024)  // the Unix port's default for a 32-bit build
#define STACK_LIMIT (256 * 1024)    // the C stack that the core may use before it raises RuntimeError
#define MAX_FREEZE 8

static size_t heapstats_every;  // bytes between collections (-X heapstats=N); 0: off
static size_t live_peak, collections;

void mp32_freeze_load(const char *const *dirs, size_t n_dirs);
void mp32_freeze_attach(void);

static void usage(void) {
    fprintf(stderr, "usage: micropython [-X heapsize=N[K|M]] [-X heapstats=N] [-X freeze=DIR]... "
        "(SCRIPT | -m MODULE | -c CODE) [ARG...]\n");
    exit(2);
}

static size_t parse_size(const char *s) {
    char *end;
    long n = strtol(s, &end, 0);
    if (n <= 0) {
        usage();
    }
    if (*end == 'k' || *end == 'K') {
        n *= 1024;
        end++;
    } else if (*end == 'm' || *end == 'M') {
        n *= 1024 * 1024;
        end++;
    }
    if (*end != '\0') {
        usage();
    }
    return (size_t)n;
}

static void sigint(int sig) {
    (void)sig;
    mp_sched_keyboard_interrupt();
}

// The exit status for an exception that reached the top; SystemExit's argument decides, as in CPython.
static int exit_status(mp_obj_t exc) {
    if (mp_obj_is_subclass_fast(MP_OBJ_FROM_PTR(mp_obj_get_type(exc)), MP_OBJ_FROM_PTR(&mp_type_SystemExit))) {
        mp_obj_t code = mp_obj_exception_get_value(exc);
        if (code == mp_const_none) {
            return 0;
        }
        if (mp_obj_is_int(code)) {
            return mp_obj_get_int_truncated(code) & 0xff;
        }
        mp_obj_print_helper(&mp_stderr_print, code, PRINT_STR);
        mp_print_str(&mp_stderr_print, "\n");
        return 1;
    }
    mp_obj_print_exception(&mp_stderr_print, exc);
    return 1;
}

static void set_sys_path(const char *first) {
    mp_sys_path = mp_obj_new_list(0, NULL);
    mp_obj_list_append(mp_sys_path, mp_obj_new_str(first, strlen(first)));
    const char *p = getenv("MICROPYPATH");
    while (p != NULL && *p != '\0') {
        const char *end = strchr(p, ':');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        mp_obj_list_append(mp_sys_path, mp_obj_new_str(p, n));
        p = end ? end + 1 : NULL;
    }
}

static int run(int argc, char **argv, int a) {
    nlr_buf_t nlr;
    if (nlr_push(&nlr) != 0) {
        return exit_status(MP_OBJ_FROM_PTR(nlr.ret_val));
    }
    const char *kind = argv[a];
    int first_arg = (kind[0] == '-') ? a + 1 : a;
    if (first_arg >= argc) {
        usage();
    }
    mp_obj_list_init(MP_OBJ_TO_PTR(mp_sys_argv), 0);
    for (int i = first_arg; i < argc; i++) {
        mp_obj_list_append(mp_sys_argv, mp_obj_new_str(argv[i], strlen(argv[i])));
    }
    if (strcmp(kind, "-m") == 0) {
        set_sys_path("");
        // fromlist=False: the core's signal to name the module __main__ (MICROPY_MODULE_OVERRIDE_MAIN_IMPORT)
        mp_obj_t args[4] = {mp_obj_new_str(argv[first_arg], strlen(argv[first_arg])), mp_const_none,
                            mp_const_none, mp_const_false};
        mp_builtin___import__(4, args);
    } else if (strcmp(kind, "-c") == 0) {
        set_sys_path("");
        mp_lexer_t *lex = mp_lexer_new_from_str_len(MP_QSTR__lt_stdin_gt_, argv[first_arg],
            strlen(argv[first_arg]), 0);
        mp_parse_compile_execute(lex, MP_PARSE_FILE_INPUT, mp_globals_get(), mp_locals_get());
    } else if (kind[0] == '-') {
        usage();
    } else {
        const char *slash = strrchr(kind, '/');
        char *dir = strndup(kind, slash ? (size_t)(slash - kind) : 0);
        set_sys_path(slash ? dir : "");
        free(dir);
        qstr file = qstr_from_str(kind);
        mp_lexer_t *lex = mp_lexer_new_from_file(file);
        mp_store_global(MP_QSTR___file__, MP_OBJ_NEW_QSTR(file));
        mp_parse_compile_execute(lex, MP_PARSE_FILE_INPUT, mp_globals_get(), mp_locals_get());
    }
    nlr_pop();
    return 0;
}

int main(int argc, char **argv) {
    // The stack checker and the GC's root scan both measure from here.
    int stack_top;
    mp_cstack_init_with_top(&stack_top, STACK_LIMIT);

    size_t heap_size = DEFAULT_HEAP;
    const char *freeze[MAX_FREEZE];
    size_t n_freeze = 0;
    int a = 1;
    while (a + 1 < argc && strcmp(argv[a], "-X") == 0) {
        if (strncmp(argv[a + 1], "heapsize=", 9) == 0) {
            heap_size = parse_size(argv[a + 1] + 9);
        } else if (strncmp(argv[a + 1], "heapstats=", 10) == 0) {
            heapstats_every = parse_size(argv[a + 1] + 10);
        } else if (strncmp(argv[a + 1], "freeze=", 7) == 0 && argv[a + 1][7] != '\0' && n_freeze < MAX_FREEZE) {
            freeze[n_freeze++] = argv[a + 1] + 7;
        } else {
            usage();
        }
        a += 2;
    }
    if (a >= argc) {
        usage();
    }
    if (n_freeze > 0) {
        mp32_freeze_load(freeze, n_freeze);  // before the heap: the code goes to a region of its own
    }
    void *heap = mmap(NULL, heap_size, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (heap == MAP_FAILED) {
        perror("micropython: heap");
        return 1;
    }
    gc_init(heap, (char *)heap + heap_size);
    mp_init();
    mp32_freeze_attach();
    if (heapstats_every) {
        MP_STATE_MEM(gc_alloc_threshold) = heapstats_every / MICROPY_BYTES_PER_GC_BLOCK;
    }
    signal(SIGINT, sigint);
    signal(SIGPIPE, SIG_IGN);  // a write to a closed socket or pipe raises OSError(EPIPE) instead
    int status = run(argc, argv, a);
    if (heapstats_every) {
        fprintf(stderr, "mp32: heapstats live_peak=%u collections=%u heap=%u\n", (unsigned)live_peak,
            (unsigned)collections, (unsigned)heap_size);
    }
    mp_deinit();
    return status;
}

void nlr_jump_fail(void *val) {
    fprintf(stderr, "micropython: uncaught NLR %p\n", val);
    exit(1);
}

void gc_collect(void) {
    gc_collect_start();
    gc_helper_collect_regs_and_stack();
    gc_collect_end();
    if (heapstats_every) {
        gc_info_t info;
        gc_info(&info);
        collections++;
        if (info.used > live_peak) {
            live_peak = info.used;
        }
    }
}
