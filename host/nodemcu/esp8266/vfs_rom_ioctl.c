// vfs.rom_ioctl of the FLASH_2M_ROMFS variant (ports/esp8266/vfs_rom_ioctl.c) over the virtual board's
// flash image: the launcher names the partition in ESPBLINK_ROMFS=path:offset:size (the image file, 0xB0000,
// 320 KB). The segment is the file memory-mapped shared and read-only, so code in a ROMFS image runs in
// place as it does from the board's flash and writes made through rom_ioctl are seen at once; writing
// into the memoryview faults, as it does on the board. WRITE_PREPARE erases to 0xFF, WRITE programs as
// NOR flash does (bits only cleared), both through the file.
//
// The unix port's main.c defines its own mp_vfs_rom_ioctl (an empty image) when MICROPY_VFS_ROM_IOCTL is
// on: the link wraps the name (mpconfigvariant.mk: -Wl,--wrap=mp_vfs_rom_ioctl), so every call reaches
// this one. Without ESPBLINK_ROMFS (a 1 MiB board, `espblink run`) there is no partition: no segments.
// mp_init's own mount of /rom (mp_vfs_mount_romfs_protected) is wrapped too, to nothing: the frozen
// launch.py mounts it once the board's filesystem is up, and sets sys.path.

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "py/mperrno.h"
#include "py/objarray.h"
#include "py/runtime.h"
#include "extmod/vfs.h"

#if MICROPY_VFS_ROM_IOCTL

#define FLASH_PAGE_SIZE (4096)

static mp_obj_array_t romfs_obj;
static int romfs_fd = -1;
static off_t romfs_offset;
static size_t romfs_size;
static bool romfs_tried;

// The partition from ESPBLINK_ROMFS, mapped on first use; false when there is none.
static bool romfs_open(void) {
    if (romfs_tried) {
        return romfs_fd >= 0;
    }
    romfs_tried = true;
    const char *spec = getenv("ESPBLINK_ROMFS");
    if (spec == NULL || *spec == '\0') {
        return false;
    }
    // path:offset:size, read from the right (the path may hold colons).
    const char *size_s = strrchr(spec, ':');
    const char *off_s = NULL;
    for (const char *p = size_s; p != NULL && p > spec;) {
        if (*--p == ':') {
            off_s = p;
            break;
        }
    }
    if (size_s == NULL || off_s == NULL) {
        fprintf(stderr, "ESPBLINK_ROMFS=%s: expected path:offset:size\n", spec);
        return false;
    }
    char path[1024];
    size_t n = off_s - spec;
    if (n >= sizeof(path)) {
        fprintf(stderr, "ESPBLINK_ROMFS: path too long\n");
        return false;
    }
    memcpy(path, spec, n);
    path[n] = '\0';
    unsigned long offset = strtoul(off_s + 1, NULL, 0);
    unsigned long size = strtoul(size_s + 1, NULL, 0);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || offset % FLASH_PAGE_SIZE || size == 0
        || (unsigned long long)st.st_size < (unsigned long long)offset + size) {
        fprintf(stderr, "ESPBLINK_ROMFS=%s: no such partition in that file\n", spec);
        if (fd >= 0) {
            close(fd);
        }
        return false;
    }
    void *base = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, offset);
    if (base == MAP_FAILED) {
        fprintf(stderr, "ESPBLINK_ROMFS=%s: mmap failed\n", spec);
        close(fd);
        return false;
    }
    mp_obj_memoryview_init(&romfs_obj, 'B', 0, size, base);
    romfs_fd = fd;
    romfs_offset = offset;
    romfs_size = size;
    return true;
}

// Bytes programmed into the image at the partition's offset `at`: each result bit is old AND new.
static int romfs_program(size_t at, const uint8_t *data, size_t len, bool erase) {
    const uint8_t *old = (const uint8_t *)romfs_obj.items;
    uint8_t buf[256];
    while (len > 0) {
        size_t k = len < sizeof(buf) ? len : sizeof(buf);
        for (size_t i = 0; i < k; ++i) {
            buf[i] = erase ? 0xff : (uint8_t)(old[at + i] & data[i]);
        }
        if (pwrite(romfs_fd, buf, k, romfs_offset + at) != (ssize_t)k) {
            return -MP_EIO;
        }
        at += k;
        len -= k;
        if (!erase) {
            data += k;
        }
    }
    return 0;
}

mp_obj_t __wrap_mp_vfs_rom_ioctl(size_t n_args, const mp_obj_t *args);

mp_obj_t __wrap_mp_vfs_rom_ioctl(size_t n_args, const mp_obj_t *args) {
    mp_int_t cmd = mp_obj_get_int(args[0]);
    if (!romfs_open()) {
        // As the port without a partition.
        return MP_OBJ_NEW_SMALL_INT(cmd == MP_VFS_ROM_IOCTL_GET_NUMBER_OF_SEGMENTS ? 0 : -MP_EINVAL);
    }
    switch (cmd) {
        case MP_VFS_ROM_IOCTL_GET_NUMBER_OF_SEGMENTS:
            return MP_OBJ_NEW_SMALL_INT(1);

        case MP_VFS_ROM_IOCTL_GET_SEGMENT:
            return MP_OBJ_FROM_PTR(&romfs_obj);

        case MP_VFS_ROM_IOCTL_WRITE_PREPARE: {
            if (n_args < 3) {
                return MP_OBJ_NEW_SMALL_INT(-MP_EINVAL);
            }
            // Whole 4 KB sectors from the partition's start. The board would erase on past the partition's
            // end into the filesystem: refused here instead.
            mp_int_t len = mp_obj_get_int(args[2]);
            size_t end = (len + FLASH_PAGE_SIZE - 1) / FLASH_PAGE_SIZE * FLASH_PAGE_SIZE;
            if (len < 0 || end > romfs_size) {
                return MP_OBJ_NEW_SMALL_INT(-MP_EINVAL);
            }
            int res = romfs_program(0, NULL, end, true);
            return MP_OBJ_NEW_SMALL_INT(res ? res : 4); // minimum write size
        }

        case MP_VFS_ROM_IOCTL_WRITE: {
            if (n_args < 4) {
                return MP_OBJ_NEW_SMALL_INT(-MP_EINVAL);
            }
            mp_int_t offset = mp_obj_get_int(args[2]);
            mp_buffer_info_t bufinfo;
            mp_get_buffer_raise(args[3], &bufinfo, MP_BUFFER_READ);
            if (offset < 0 || (size_t)offset + bufinfo.len > romfs_size) {
                return MP_OBJ_NEW_SMALL_INT(-MP_EINVAL);
            }
            return MP_OBJ_NEW_SMALL_INT(romfs_program(offset, bufinfo.buf, bufinfo.len, false));
        }

        default:
            return MP_OBJ_NEW_SMALL_INT(-MP_EINVAL);
    }
}

int __wrap_mp_vfs_mount_romfs_protected(void);

int __wrap_mp_vfs_mount_romfs_protected(void) {
    return 0;
}

#endif // MICROPY_VFS_ROM_IOCTL
