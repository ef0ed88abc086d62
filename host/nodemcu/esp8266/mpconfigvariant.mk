# The NodeMCU's MicroPython on the host: 32-bit like the ESP8266 (MICROPY_FORCE_32BIT=1 is given by
# nodemcu.runtime where the host can build it), no threads, no libffi, no TLS, FAT and littlefs v2.
FROZEN_MANIFEST = $(VARIANT_DIR)/manifest.py
MICROPY_PY_THREAD = 0
MICROPY_PY_FFI = 0
MICROPY_PY_BTREE = 0
MICROPY_PY_SSL = 0
MICROPY_PY_TERMIOS = 0
MICROPY_VFS_FAT = 1
MICROPY_VFS_LFS1 = 0
MICROPY_VFS_LFS2 = 1
# vfs.rom_ioctl over the flash image's ROMFS partition (vfs_rom_ioctl.c: it replaces main.c's, and
# launch.py mounts /rom).
SRC_C += $(VARIANT_DIR)/vfs_rom_ioctl.c
LDFLAGS_EXTRA += -Wl,--wrap=mp_vfs_rom_ioctl,--wrap=mp_vfs_mount_romfs_protected
# Ctrl-C between two runs is a character, not the end of the process (ctrl_c.c).
SRC_C += $(VARIANT_DIR)/ctrl_c.c
LDFLAGS_EXTRA += -Wl,--wrap=mp_hal_set_interrupt_char
# machine.Timer's clock: SIGALRM schedules the shim's callbacks as the SDK's software timers do (vtimer.c).
SRC_C += $(VARIANT_DIR)/vtimer.c
