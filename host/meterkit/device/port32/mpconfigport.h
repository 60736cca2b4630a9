// The 32-bit MicroPython of the tests ("mp32", docs/mp32.md): MicroPython's core (py/) built with gcc -m32 and
// the ESP32's number model. Everything not set here is py/mpconfig.h's default for the ROM level the ESP32
// port uses. What differs from a board on purpose: x86 instead of Xtensa code, a POSIX file system instead of
// LittleFS, and the test-only stand-ins for extmod modules (mod*.c here, listed in docs/mp32.md).

#include <stdint.h>
#include <alloca.h>

#define MICROPY_CONFIG_ROM_LEVEL            (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)  // as ports/esp32

// The number model of an ESP32. REPR_A on a 32-bit target: small ints are 31-bit, a larger int is an mpz on
// the heap, and a float is a heap object of single precision.
#define MICROPY_OBJ_REPR                    (MICROPY_OBJ_REPR_A)
#define MICROPY_LONGINT_IMPL                (MICROPY_LONGINT_IMPL_MPZ)
#define MICROPY_FLOAT_IMPL                  (MICROPY_FLOAT_IMPL_FLOAT)

// Native code: the x86 emitter (viper words are 32 bits) and .mpy files with x86 machine code
// (mpy-cross -march=x86). The nlr is the core's x86 one, not setjmp: the native code that mpy-cross emits
// sizes its exception buffers for it.
#define MICROPY_EMIT_X86                    (1)
#define MICROPY_PERSISTENT_CODE_LOAD        (1)

// Heap and allocation, as on a board; mem_total() is extra, for the tests that count allocated bytes.
#define MICROPY_ENABLE_GC                   (1)
#define MICROPY_ENABLE_EMERGENCY_EXCEPTION_BUF (1)
#define MICROPY_EMERGENCY_EXCEPTION_BUF_SIZE (256)
#define MICROPY_MEM_STATS                   (1)
#define MICROPY_MALLOC_USES_ALLOCATED_SIZE  (1)  // required by MEM_STATS
#define MICROPY_PY_MICROPYTHON_HEAP_LOCKED  (1)
#define MICROPY_ERROR_REPORTING             (MICROPY_ERROR_REPORTING_NORMAL)
#define MICROPY_WARNINGS                    (1)
#define MICROPY_OPT_COMPUTED_GOTO           (1)
#define MICROPY_ALLOC_PATH_MAX              (256)

// Importing from the host's file system (.py and .mpy); the port provides mp_import_stat and open().
#define MICROPY_READER_POSIX                (1)
#define MICROPY_MODULE_OVERRIDE_MAIN_IMPORT (1)  // micropython -m pkg.mod
#define MICROPY_MODULE_FROZEN_MPY           (1)  // -X freeze=DIR: frozen.c, the import path of a frozen image
#define MICROPY_PY_SYS_PATH_ARGV_DEFAULTS   (0)  // main.c fills sys.path (MICROPYPATH) and sys.argv
#define MICROPY_PY_SYS_PLATFORM             "mp32"
#define MICROPY_HW_BOARD_NAME               "meterkit mp32 (32-bit core for tests)"
#define MICROPY_HW_MCU_NAME                 "x86"
#define MICROPY_EPOCH_IS_2000               (1)  // as on the ESP32 (meter/hal.py converts)
#define MICROPY_PY_TIME_TICKS_PERIOD        (1 << 30)  // ticks_us/ms wrap where the ESP32's do
#define MICROPY_USE_INTERNAL_PRINTF         (0)
#define MICROPY_USE_INTERNAL_ERRNO          (0)
#define MICROPY_HELPER_REPL                 (0)  // scripts only: no REPL
#define MICROPY_PY_BUILTINS_INPUT           (0)  // it needs shared/readline
#define MICROPY_ENABLE_FINALISER            (1)  // files and sockets close when collected
#define MICROPY_PY_SYS_PS1_PS2              (0)
#define MICROPY_KBD_EXCEPTION               (1)  // SIGINT raises KeyboardInterrupt (main.c)
#define MICROPY_PY_JSON                     (1)  // the core's JSON printers, used by the json stand-in

// extmod is not in the sdist: none of its modules exist here (the stand-ins below take their names).
#define MICROPY_PY_OS                       (0)
#define MICROPY_PY_TIME                     (0)
#define MICROPY_PY_SELECT                   (0)
#define MICROPY_PY_MACHINE                  (0)
#define MICROPY_PY_VFS                      (0)
#define MICROPY_VFS                         (0)
#define MICROPY_PY_UCTYPES                  (0)
#define MICROPY_PY_PLATFORM                 (0)
#define MICROPY_PY_THREAD                   (0)

extern const struct _mp_print_t mp_stderr_print;
#define MICROPY_ERROR_PRINTER               (&mp_stderr_print)
#define MICROPY_DEBUG_PRINTER               (&mp_stderr_print)

#define MP_STATE_PORT MP_STATE_VM
#define MP_SSIZE_MAX                        (0x7fffffff)

typedef int32_t mp_int_t;
typedef uint32_t mp_uint_t;
typedef long mp_off_t;
#include <sys/types.h>
