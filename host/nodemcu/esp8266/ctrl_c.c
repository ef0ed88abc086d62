// Ctrl-C on the virtual board's UART. The board's UART driver turns Ctrl-C into KeyboardInterrupt while
// code runs and into a plain character at the REPL; it never stops the chip. The unix port gets Ctrl-C
// as SIGINT from the board's pty while code runs, and between two runs it puts SIGINT back to its default
// action, which ends the process: a Ctrl-C arriving then (mpremote sends one as it connects, just as
// boot.py and main.py end) would power the board down. The link wraps the name
// (mpconfigvariant.mk: -Wl,--wrap=mp_hal_set_interrupt_char) so that between runs SIGINT is ignored.

#include <signal.h>
#include <stddef.h>

void __real_mp_hal_set_interrupt_char(char c);

void __wrap_mp_hal_set_interrupt_char(char c) {
    __real_mp_hal_set_interrupt_char(c);
    if (c != 3) {
        struct sigaction sa;
        sa.sa_flags = 0;
        sa.sa_handler = SIG_IGN;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
    }
}
