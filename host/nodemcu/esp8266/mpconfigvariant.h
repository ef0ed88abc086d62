// The unix port built as the NodeMCU's MicroPython: ports/esp8266/mpconfigport.h and the
// ESP8266_GENERIC board (2 MiB and up) of v1.27.0, where they apply on a host. What the board has in C
// (machine, network, esp, lwIP) comes from frozen Python shims and the host's sockets instead.

#define MICROPY_CONFIG_ROM_LEVEL (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)

// ports/esp8266/mpconfigport.h: the extra-level items the board is built without.
#define MICROPY_COMP_MODULE_CONST               (0)
#define MICROPY_COMP_TRIPLE_TUPLE_ASSIGN        (0)
#define MICROPY_COMP_RETURN_IF_EXPR             (0)
#define MICROPY_OPT_LOAD_ATTR_FAST_PATH         (0)
#define MICROPY_OPT_MAP_LOOKUP_CACHE            (0)
#define MICROPY_OPT_MPZ_BITWISE                 (0)
#define MICROPY_OPT_MATH_FACTORIAL              (0)
#define MICROPY_REPL_EMACS_KEYS                 (0)
#define MICROPY_PY_BUILTINS_COMPLEX             (0)
#define MICROPY_MODULE___FILE__                 (0)
#define MICROPY_PY_DELATTR_SETATTR              (0)
#define MICROPY_PY_BUILTINS_STR_CENTER          (0)
#define MICROPY_PY_BUILTINS_STR_PARTITION       (0)
#define MICROPY_PY_BUILTINS_STR_SPLITLINES      (0)
#define MICROPY_PY_BUILTINS_SLICE_INDICES       (0)
#define MICROPY_PY_BUILTINS_COMPILE             (0)
#define MICROPY_PY_BUILTINS_EXECFILE            (0)
#define MICROPY_PY_BUILTINS_NOTIMPLEMENTED      (0)
#define MICROPY_PY_BUILTINS_POW3                (0)
#define MICROPY_PY_MATH_CONSTANTS               (0)
#define MICROPY_PY_MATH_SPECIAL_FUNCTIONS       (0)
#define MICROPY_PY_MATH_FACTORIAL               (0)
#define MICROPY_PY_MATH_ISCLOSE                 (0)
#define MICROPY_PY_SYS_PS1_PS2                  (0)
#define MICROPY_PY_BINASCII_CRC32               (0)
#define MICROPY_PY_RANDOM_EXTRA_FUNCS           (0)

// The board's object model, numbers and errors.
#define MICROPY_OBJ_REPR                        (MICROPY_OBJ_REPR_C)
#define MICROPY_FLOAT_IMPL                      (MICROPY_FLOAT_IMPL_FLOAT)
#define MICROPY_LONGINT_IMPL                    (MICROPY_LONGINT_IMPL_MPZ)
#define MICROPY_ERROR_REPORTING                 (MICROPY_ERROR_REPORTING_NORMAL)
#define MICROPY_WARNINGS                        (1)
#define MICROPY_PY_STR_BYTES_CMP_WARN           (1)
#define MICROPY_ENABLE_EMERGENCY_EXCEPTION_BUF  (1)
#define MICROPY_EMERGENCY_EXCEPTION_BUF_SIZE    (256)
#define MICROPY_PERSISTENT_CODE_LOAD            (1)
#define MICROPY_PY_HASHLIB_MD5                  (0)
#define MICROPY_PY_HASHLIB_SHA1                 (0)
#define MICROPY_PY_TIME_TIME_TIME_NS            (1)
#define MICROPY_PY_WEBSOCKET                    (1)
#define MICROPY_PY_OS_URANDOM                   (1)

// machine, network and esp are frozen shims (esp8266/modules), not the unix port's C machine.
#define MICROPY_PY_MACHINE                      (0)

// What the unix port itself needs to run here: its os and time, select.poll over host descriptors.
#define MICROPY_PY_OS_INCLUDEFILE               "ports/unix/modos.c"
#define MICROPY_PY_OS_ERRNO                     (1)
#define MICROPY_PY_OS_GETENV_PUTENV_UNSETENV    (1)
#define MICROPY_PY_TIME                         (1)
#define MICROPY_PY_TIME_CUSTOM_SLEEP            (1)
#define MICROPY_PY_TIME_INCLUDEFILE             "ports/unix/modtime.c"
#define MICROPY_PY_SELECT_POSIX_OPTIMISATIONS   (1)
#define MICROPY_PY_SELECT_SELECT                (0)
#define MICROPY_ASYNC_KBD_INTR                  (1)
#define MICROPY_STREAMS_POSIX_API               (1)
#define MICROPY_PY_RANDOM_SEED_INIT_FUNC        (mp_random_seed_init())
#define MICROPY_USE_READLINE_HISTORY            (0)
#define MICROPY_DEBUG_PRINTERS                  (1)

// The banner names the board as the firmware does.
#define MICROPY_HW_BOARD_NAME                   "ESP module (virtual NodeMCU)"
#define MICROPY_HW_MCU_NAME                     "ESP8266"

// The FLASH_2M_ROMFS variant's read-only partition, mounted at /rom.
#define MICROPY_VFS_ROM                         (1)
#define MICROPY_VFS_ROM_IOCTL                   (1)  // vfs_rom_ioctl.c
