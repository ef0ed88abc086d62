// The clock behind the virtual board's machine.Timer (the shim in modules/machine.py). On the ESP8266 a
// Timer(-1) is an SDK software timer whose expiry schedules the Python callback (mp_sched_schedule): it
// runs between two bytecodes, or inside a blocking call's wait, whatever the main code is doing. Here the
// expiry is SIGALRM from setitimer(): the handler schedules the shim's dispatcher the same way, and as the
// handler is installed without SA_RESTART a blocking call returns EINTR, on which the unix port runs what
// is pending (MP_HAL_RETRY_SYSCALL, time.sleep) and carries on. One alarm at a time: the shim arms the
// nearest of its timers.
//
// _vtimer.arm(ms, callback): callback(None) is scheduled ms from now (at least 1); ms <= 0 disarms.

#include <signal.h>
#include <string.h>
#include <sys/time.h>

#include "py/runtime.h"

MP_REGISTER_ROOT_POINTER(mp_obj_t vtimer_callback);

static void vtimer_expired(int signum) {
    (void)signum;
    if (MP_STATE_VM(vtimer_callback) != MP_OBJ_NULL) {
        mp_sched_schedule(MP_STATE_VM(vtimer_callback), mp_const_none);
    }
}

static mp_obj_t vtimer_arm(mp_obj_t ms_in, mp_obj_t callback) {
    static bool installed;
    if (!installed) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = vtimer_expired;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGALRM, &sa, NULL);
        installed = true;
    }
    mp_int_t ms = mp_obj_get_int(ms_in);
    struct itimerval it;
    memset(&it, 0, sizeof it);
    MP_STATE_VM(vtimer_callback) = ms > 0 ? callback : MP_OBJ_NULL;
    if (ms > 0) {
        it.it_value.tv_sec = ms / 1000;
        it.it_value.tv_usec = (ms % 1000) * 1000;
    }
    setitimer(ITIMER_REAL, &it, NULL);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(vtimer_arm_obj, vtimer_arm);

static const mp_rom_map_elem_t vtimer_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR__vtimer) },
    { MP_ROM_QSTR(MP_QSTR_arm), MP_ROM_PTR(&vtimer_arm_obj) },
};
static MP_DEFINE_CONST_DICT(vtimer_globals, vtimer_globals_table);

const mp_obj_module_t vtimer_module = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&vtimer_globals,
};

MP_REGISTER_MODULE(MP_QSTR__vtimer, vtimer_module);
