// HAL of the mp32 port: stdio on file descriptors, time from the host's monotonic clock (hal.c).

// No pins here; defining the type keeps py/mphal.h from pulling in extmod/virtpin.h (not in the sdist).
#define mp_hal_pin_obj_t int

static inline void mp_hal_set_interrupt_char(int c) {
    (void)c;  // Ctrl-C comes as SIGINT (main.c), never through stdin
}

// Text is written as is: no "\n" -> "\r\n" cooking on a POSIX terminal.
#define mp_hal_stdout_tx_strn_cooked(s, n) mp_hal_stdout_tx_strn((s), (n))
